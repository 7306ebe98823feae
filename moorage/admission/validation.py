"""The validating webhook's decisions: which images may run in which namespaces.

Pure: no I/O. The caller parses the review, supplies the rules and a ``tag_mode`` callable, and
sends the response. A rule document (TOML ``[[admission.validation.rules]]``, or JSON)::

    name = "prod-sources"                    # required, unique; every refusal names it
    namespaces = ["prod", "prod-*"]          # required: names, globs, "*" for all, "regex:..."
    except_namespaces = ["prod-sandbox"]     # namespaces the rule does not cover
    allowed_sources = ["registry.internal:5000", "docker.io/library/*"]
    denied_sources = ["docker.io/library/ubuntu"]
    require_digest = false                   # the image must name a digest (@sha256:...)
    refuse_mutable_tags = true               # a tag must be one the tag policy fixes
    refuse_latest = true                     # no "latest", explicit or implicit
    action = "deny"                          # or "warn": admit, with a warning per problem
    description = "..."

How rules combine. **Every** rule whose namespaces match the request's namespace applies, and
each may refuse: the problems of all of them are reported together (rules never override each
other; a namespace no rule covers is admitted unchecked, so add a ``namespaces = "*"`` rule for
a baseline). Within one rule, ``denied_sources`` wins over ``allowed_sources``.

Sources are globs over the *normalised* repository ``domain/path``, as Docker reads the image:
``nginx:1.25`` is ``docker.io/library/nginx``. ``*`` stays inside one path segment and ``**``
crosses them (as in tag policies); ``regex:<pattern>`` matches the whole name. A pattern with no
``/`` is a registry host and means every repository on it (``registry.internal:5000`` is
``registry.internal:5000/**``). Hosts compare case-insensitively (DNS does; a regex sees the
host in lowercase), and a port is part of the host. Patterns and images are normalised alike:
``index.docker.io`` is ``docker.io`` and ``docker.io/nginx`` is ``docker.io/library/nginx``
(``Docker.io/nginx`` too, so no spelling slips past a denied source); ``docker.io/*`` is
refused as ambiguous (write ``docker.io/library/*`` for official images, or ``docker.io`` for
all of Docker Hub). Sources name repositories, never tags or digests.

Checks on tags and digests. The tag is judged as written, also next to a digest: the pinning
webhook runs first (mutating webhooks run before validating ones) and adds a digest to every
image it resolves, so a check that let any image with a digest pass would pass everything
pinning handles. ``app:latest@sha256:...`` still says "latest", and a team that refuses
``latest`` in production means that one too. Pinning keeps an implicit ``latest`` visible for
this (``app`` becomes ``app:latest@sha256:...``). An image written with a digest and no tag
(``app@sha256:...``) names no tag, and passes both tag checks.

- ``require_digest``: the image must carry ``@sha256:...`` (behind pinning, every image it
  resolves does; this refuses what it leaves unpinned: ``on_failure = "warn"``, namespaces it
  skips).
- ``refuse_latest``: refuses the tag ``latest``, written out (``nginx:latest``, also
  ``nginx:latest@sha256:...``) or implicit (``nginx``).
- ``refuse_mutable_tags``: an image with a tag is refused unless ``tag_mode(reference)`` says
  the tag is immutable, whether or not it also names a digest. ``tag_mode`` returns a
  tag-policy ``Decision``, or None when no policy governs that image (another registry's tags
  can move whatever our policy says): None is refused too. ``local_tag_mode`` builds the
  usual one.

One reason per rule and image: a missing digest (``require_digest``) covers ``latest`` and
mutable tags, and ``latest`` covers a mutable tag, so ``tag_mode`` is asked only when needed
(and once per image per review). An image that cannot be parsed is refused by the rules that
apply, with the parse error: what cannot be read cannot be checked.

Which containers: those pinning looks at. CREATE and UPDATE of the kinds in
``workloads.POD_SPEC_PATHS``, all three container lists; the ``pods/ephemeralcontainers``
subresource only for ephemeral containers; other subresources (``status``, ``scale``...) and
other operations (DELETE, CONNECT) are admitted. On UPDATE, given the old object (the review's
``oldObject``, passed as ``old_object``; without it everything is judged), a container
whose image did not change (same list, same name, same image) is not judged again: adding a
rule must not make existing objects impossible to label, scale by edit, or strip of their
finalizers. Nothing escapes by this: every new Pod is a CREATE, judged in full.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from moorage.admission.pinning import OPERATIONS, written_tag
from moorage.admission.review import AdmissionRequest, AdmissionResponse
from moorage.admission.workloads import CONTAINER_KINDS, ContainerKind, ImageSite, image_sites
from moorage.documents import ONE_OR_MORE, Invalid, hint, located, non_empty, read, read_as
from moorage.policy import Decision, Pattern, Policy
from moorage.reference import DOCKER_HUB, ImageReference, ReferenceError, parse_reference

Action = Literal["deny", "warn"]
ACTIONS: tuple[Action, ...] = ("deny", "warn")

#: Whether an image's tag is immutable: a tag-policy decision, or None when no policy
#: governs the image (then its tag counts as mutable).
TagMode = Callable[[ImageReference], Decision | None]

#: The refusal message lists this many problems at most, then how many more there are.
MAX_PROBLEMS = 20

_REGEX_PREFIX = "regex:"
_GLOB_CHARS = frozenset("*?")
_LEGACY_HUB_HOSTS = frozenset({"index.docker.io", "registry-1.docker.io"})
_NAMESPACE_GLOB_RE = re.compile(r"[a-z0-9*?-]+")
_HOST_GLOB_RE = re.compile(r"[a-z0-9*?.\-:\[\]]+")
_PATH_GLOB_RE = re.compile(r"[a-z0-9*?._\-/]+")
_CHECKS = (
    "allowed_sources",
    "denied_sources",
    "require_digest",
    "refuse_mutable_tags",
    "refuse_latest",
)


def _namespace_pattern(text: str) -> None:
    if not text.startswith(_REGEX_PREFIX) and not _NAMESPACE_GLOB_RE.fullmatch(text):
        raise Invalid(
            f"{text!r} is not a namespace pattern (namespaces are lowercase letters, digits "
            "and '-'; globs may use '*' and '?'; or write 'regex:<pattern>')"
        )
    Pattern(text, segments=False).regex  # noqa: B018 - compiles: raises Invalid


@dataclass(frozen=True)
class Source:
    """A source pattern: ``text`` as written, ``pattern`` as matched (normalised)."""

    text: str
    pattern: Pattern

    def matches(self, repository: str) -> bool:
        """``repository`` is ``domain/path`` with the domain in lowercase (see ``subject``)."""
        return self.pattern.matches(repository)

    @classmethod
    def parse(cls, text: str) -> Source:
        """The source ``text`` names; ``Invalid`` says why it names none."""
        if text.startswith(_REGEX_PREFIX):
            source = cls(text, Pattern(text, segments=True))
            source.pattern.regex  # noqa: B018 - compiles: raises Invalid
            return source
        if "@" in text or any(c.isspace() for c in text):
            raise Invalid(f"{text!r} is not a source: sources name repositories, not digests")
        host, slash, path = text.partition("/")
        host = host.lower()
        if host in _LEGACY_HUB_HOSTS:
            host = DOCKER_HUB
        if not host or not _HOST_GLOB_RE.fullmatch(host):
            raise Invalid(f"{text!r} does not start with a registry host")
        if slash and not path:
            raise Invalid(f"{text!r} ends with '/': write {host!r} for every repository on it")
        if ":" in path:
            raise Invalid(f"{text!r} is not a source: sources name repositories, not tags")
        if path and (not _PATH_GLOB_RE.fullmatch(path) or "" in path.split("/")):
            raise Invalid(
                f"{text!r} is not a repository pattern (paths are lowercase [a-z0-9._-] "
                "components separated by single '/'; globs may use '*', '**' and '?')"
            )
        if not path:
            path = "**"  # a bare host: every repository on it
        elif host == DOCKER_HUB and "/" not in path and path != "**":
            if _GLOB_CHARS & set(path):
                raise Invalid(
                    f"{text!r} is ambiguous: Docker Hub names have two components "
                    f"(nginx is {DOCKER_HUB}/library/nginx); write '{DOCKER_HUB}/library/{path}' "
                    f"for official images or '{DOCKER_HUB}' for all of Docker Hub"
                )
            path = f"library/{path}"  # as Docker reads docker.io/nginx
        source = cls(text, Pattern(f"{host}/{path}", segments=True))
        source.pattern.regex  # noqa: B018 - compiles: raises Invalid
        return source


def _allowed(sources: tuple[str, ...]) -> None:
    if not sources:
        raise Invalid("empty, which would refuse every image: leave it out to allow any source")


def _denied(sources: tuple[str, ...]) -> None:
    if not sources:
        raise Invalid("empty, which denies nothing: leave it out")


def _rule_name(name: str) -> None:
    if not name.strip() or name != name.strip():
        raise Invalid("must be a non-empty string without outer spaces")


NamespacePattern = Annotated[str, non_empty, _namespace_pattern]
SourcePattern = Annotated[str, non_empty, Source.parse]


@dataclass(frozen=True)
class RuleDocument:
    """A validation rule as written (see the module's documentation)."""

    ITEM_LABEL: ClassVar[str] = "validation rule"

    name: Annotated[str, _rule_name]
    namespaces: Annotated[tuple[NamespacePattern, ...], ONE_OR_MORE, non_empty] = field(
        metadata=hint('write "*" for every namespace')
    )
    except_namespaces: Annotated[tuple[NamespacePattern, ...], ONE_OR_MORE] = ()
    allowed_sources: Annotated[tuple[SourcePattern, ...], ONE_OR_MORE, _allowed] | None = None
    denied_sources: Annotated[tuple[SourcePattern, ...], ONE_OR_MORE, _denied] = ()
    require_digest: bool = False
    refuse_mutable_tags: bool = False
    refuse_latest: bool = False
    action: Action = "deny"
    description: str = ""

    def verify(self) -> None:
        if not (
            self.allowed_sources is not None
            or self.denied_sources
            or self.require_digest
            or self.refuse_mutable_tags
            or self.refuse_latest
        ):
            raise Invalid(f"checks nothing: set one of {', '.join(_CHECKS)}")

    def rule(self) -> ValidationRule:
        return ValidationRule(
            name=self.name,
            namespaces=tuple(Pattern(text, segments=False) for text in self.namespaces),
            except_namespaces=tuple(
                Pattern(text, segments=False) for text in self.except_namespaces
            ),
            allowed_sources=(
                None
                if self.allowed_sources is None
                else tuple(Source.parse(text) for text in self.allowed_sources)
            ),
            denied_sources=tuple(Source.parse(text) for text in self.denied_sources),
            require_digest=self.require_digest,
            refuse_mutable_tags=self.refuse_mutable_tags,
            refuse_latest=self.refuse_latest,
            action=self.action,
            description=self.description,
        )


def unique_rule_names(rules: Sequence[RuleDocument], *at: str | int) -> None:
    names = [rule.name for rule in rules]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise Invalid(f"validation rule names must be unique: {', '.join(duplicates)}", *at)


def subject(reference: ImageReference) -> str:
    """What source patterns are matched against: ``domain/path``, the domain in lowercase.

    Docker Hub's names are normalised again after lowercasing, so ``Docker.io/ubuntu`` is
    ``docker.io/library/ubuntu`` for the rules as it is for DNS: a host's case never slips an
    image past a denied source.
    """
    domain, path = reference.domain.lower(), reference.path
    if domain in _LEGACY_HUB_HOSTS:
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return f"{domain}/{path}"


def _texts(sources: Sequence[Source]) -> str:
    return ", ".join(s.text for s in sources)


@dataclass(frozen=True)
class ValidationRule:
    name: str
    namespaces: tuple[Pattern, ...]
    except_namespaces: tuple[Pattern, ...] = ()
    #: None: any source (no allow-list); otherwise the image must match one of them.
    allowed_sources: tuple[Source, ...] | None = None
    denied_sources: tuple[Source, ...] = ()
    require_digest: bool = False
    refuse_mutable_tags: bool = False
    refuse_latest: bool = False
    action: Action = "deny"
    description: str = ""

    def applies_to(self, namespace: str) -> bool:
        return any(p.matches(namespace) for p in self.namespaces) and not any(
            p.matches(namespace) for p in self.except_namespaces
        )

    def check(
        self, reference: ImageReference, tag_mode: TagMode, written: str | None = None
    ) -> list[str]:
        """Why ``reference`` breaks this rule (phrases following the image), or nothing.

        ``written`` is the image as the user wrote it; when its repository does not read as the
        normalised one, source problems show the normalised one.
        """
        problems: list[str] = []
        name = subject(reference)
        shown = "" if (written or str(reference)).startswith(name) else f" (that is {name})"
        denied = [s for s in self.denied_sources if s.matches(name)]
        if denied:
            problems.append(f"comes from a denied source{shown} ({_texts(denied)})")
        elif self.allowed_sources is not None and not any(
            s.matches(name) for s in self.allowed_sources
        ):
            problems.append(
                f"does not come from an allowed source{shown} ({_texts(self.allowed_sources)})"
            )
        if self.require_digest and reference.digest is None:
            problems.append("does not name a digest (write it as image@sha256:...)")
        elif reference.tag is None:
            pass  # a digest and no tag: nothing to judge a tag by
        elif self.refuse_latest and reference.tag == "latest":
            problems.append(
                'uses the tag "latest"'
                + ("" if written is None or written_tag(written) else " (no tag means it)")
                + ": name a version, or a digest without a tag (image@sha256:...)"
            )
        elif self.refuse_mutable_tags:
            decision = tag_mode(reference)
            if decision is None:
                problems.append(
                    f'uses the tag "{reference.tag}", which no tag policy known to moorage makes '
                    "immutable: name a digest without a tag (image@sha256:...)"
                )
            elif not decision.immutable:
                problems.append(
                    f'uses the tag "{reference.tag}", which is mutable (tag policy: '
                    f"{decision.reason}): use an immutable tag, or a digest without a tag "
                    "(image@sha256:...)"
                )
        return problems

    @classmethod
    def from_dict(cls, value: Any, source: str = "validation rule") -> ValidationRule:
        """Read one rule document; ``DocumentError`` names ``source``, the key and the fault."""
        return read(RuleDocument, value, source).rule()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "namespaces": [p.text for p in self.namespaces],
        }
        if self.except_namespaces:
            out["except_namespaces"] = [p.text for p in self.except_namespaces]
        if self.allowed_sources is not None:
            out["allowed_sources"] = [s.text for s in self.allowed_sources]
        if self.denied_sources:
            out["denied_sources"] = [s.text for s in self.denied_sources]
        for flag in ("require_digest", "refuse_mutable_tags", "refuse_latest"):
            if getattr(self, flag):
                out[flag] = True
        if self.action != "deny":
            out["action"] = self.action
        if self.description:
            out["description"] = self.description
        return out


def parse_rules(value: Any, source: str = "validation rules") -> tuple[ValidationRule, ...]:
    """Rules from a list of documents (``[[admission.validation.rules]]``, or JSON), names
    unique; ``DocumentError`` names ``source``, the rule, the key and the fault."""
    if value is None:
        return ()
    documents = read_as(tuple[RuleDocument, ...], value, source)
    try:
        unique_rule_names(documents)
    except Invalid as exc:
        raise located(source, exc) from None
    return tuple(document.rule() for document in documents)


def local_tag_mode(policy: Policy, hosts: Collection[str]) -> TagMode:
    """``tag_mode`` for this registry: its tag policy for its own images (``hosts`` are its
    names), None (no guarantee) for any other registry's."""
    lowered = frozenset(h.lower() for h in hosts)

    def tag_mode(reference: ImageReference) -> Decision | None:
        if reference.domain.lower() not in lowered or reference.tag is None:
            return None
        return policy.decide(reference.path, reference.tag)

    return tag_mode


def _lists(request: AdmissionRequest) -> tuple[ContainerKind, ...] | None:
    """The container lists to judge, or None when the request is not judged at all."""
    if request.operation not in OPERATIONS:
        return None
    if request.sub_resource == "ephemeralcontainers" and request.resource == "pods":
        return ("ephemeralContainers",)
    if request.sub_resource:
        return None
    return CONTAINER_KINDS


def _where(site: ImageSite) -> str:
    return f'container "{site.container}" ({site.container_kind}) image "{site.image}"'


def _named(rules: Sequence[ValidationRule]) -> str:
    names = ", ".join(f'"{r.name}"' for r in rules)
    return f"rule {names}" if len(rules) == 1 else f"rules {names}"


def validate(
    request: AdmissionRequest,
    rules: Sequence[ValidationRule],
    tag_mode: TagMode,
    *,
    old_object: Mapping[str, Any] | None = None,
) -> AdmissionResponse:
    """Admit or refuse ``request`` under every rule that applies to its namespace.

    ``old_object`` is the UPDATE's ``oldObject``; its unchanged images are not judged again.
    Problems of ``deny`` rules refuse the object (403, one message naming for each problem the
    rule, the container and the image); problems of ``warn`` rules become warnings.
    """
    response = AdmissionResponse(request.uid)
    lists = _lists(request)
    applicable = [r for r in rules if r.applies_to(request.namespace)]
    if lists is None or not applicable:
        return response
    kept: set[tuple[str, str, str]] = set()
    if request.operation == "UPDATE" and old_object is not None:
        kept = {
            (s.container_kind, s.container, s.image)
            for s in image_sites(request.kind, old_object, lists)
        }
    modes: dict[ImageReference, Decision | None] = {}

    def cached_mode(reference: ImageReference) -> Decision | None:
        if reference not in modes:
            modes[reference] = tag_mode(reference)
        return modes[reference]

    denials: list[str] = []
    warnings: list[str] = []
    for site in image_sites(request.kind, request.object, lists):
        if (site.container_kind, site.container, site.image) in kept:
            continue
        try:
            reference = parse_reference(site.image)
        except ReferenceError as exc:
            for action, found in (("deny", denials), ("warn", warnings)):
                by = [r for r in applicable if r.action == action]
                if by:
                    found.append(f"{_named(by)}: {_where(site)} cannot be checked: {exc}")
            continue
        for rule in applicable:
            for problem in rule.check(reference, cached_mode, site.image):
                found = denials if rule.action == "deny" else warnings
                found.append(f'rule "{rule.name}": {_where(site)} {problem}')
    response.warnings = [f"moorage would refuse this: {w}" for w in warnings[:MAX_PROBLEMS]]
    if len(warnings) > MAX_PROBLEMS:
        response.warnings.append(f"moorage would refuse this: {_more(warnings)}")
    if denials:
        response.allowed = False
        response.code = 403
        response.message = f"moorage refused this {request.kind}: " + "; ".join(
            denials[:MAX_PROBLEMS] + ([_more(denials)] if len(denials) > MAX_PROBLEMS else [])
        )
    return response


def _more(problems: Sequence[str]) -> str:
    more = len(problems) - MAX_PROBLEMS
    return f"and {more} more problem{'s' if more > 1 else ''}"
