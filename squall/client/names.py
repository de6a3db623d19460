"""Entity names as wsk reads them: `name`, `pkg/name`, `/ns/name`, `/ns/pkg/name` (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from squall.client.api_client import ClientError, segment


@dataclass(frozen=True, slots=True)
class QualifiedName:
    namespace: str  # "_" = the key's own
    name: str
    package: str | None = None

    @property
    def entity(self) -> str:
        """`pkg/name` or `name`: the path inside the namespace."""
        return f"{self.package}/{self.name}" if self.package else self.name

    @property
    def full(self) -> str:
        """`/ns/[pkg/]name`, as rules, sequences and feeds name entities."""
        return f"/{self.namespace}/{self.entity}"

    def path(self, collection: str) -> str:
        """The REST path of the entity in `collection` (actions, triggers, rules, packages)."""
        parts = [segment(self.package)] if self.package else []
        parts.append(segment(self.name))
        return f"namespaces/{segment(self.namespace)}/{collection}/{'/'.join(parts)}"


def parse_name(text: str, default_namespace: str = "_") -> QualifiedName:
    """wsk's rules: a leading `/` names the namespace; otherwise the configured namespace is meant."""
    if not text or not text.strip("/"):
        raise ClientError(f"The name '{text}' is not valid.")
    if text.startswith("/"):
        parts = text[1:].split("/")
        if len(parts) < 2 or len(parts) > 3 or not all(parts):
            raise ClientError(
                f"The name '{text}' is not valid: a fully qualified name is /namespace/[package/]name."
            )
        if len(parts) == 2:
            return QualifiedName(parts[0], parts[1])
        return QualifiedName(parts[0], parts[2], parts[1])
    parts = text.split("/")
    if len(parts) > 2 or not all(parts):
        raise ClientError(
            f"The name '{text}' is not valid: use name, package/name or /namespace/package/name."
        )
    if len(parts) == 2:
        return QualifiedName(default_namespace, parts[1], parts[0])
    return QualifiedName(default_namespace, parts[0])


def collection_path(namespace: str, collection: str) -> str:
    return f"namespaces/{segment(namespace)}/{collection}"


def namespace_arg(text: str | None, default_namespace: str) -> str:
    """A `list [NAMESPACE]` argument: `/ns` or `ns`."""
    return text.strip("/") if text and text.strip("/") else default_namespace


def qualify(text: str, default_namespace: str) -> str:
    """A full `/ns/[pkg/]name` for a sequence component, a rule's trigger or action, or a feed."""
    return parse_name(text, default_namespace).full
