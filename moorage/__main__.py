from moorage.cli import main

raise SystemExit(main())
