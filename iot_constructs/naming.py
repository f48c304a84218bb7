from dataclasses import dataclass


@dataclass(frozen=True)
class Naming:
    """Names of the form `<project>-<component>-<suffix>`, the one naming rule of every resource."""

    project: str
    suffix: str

    def name(self, component: str) -> str:
        return f"{self.project}-{component}-{self.suffix}"
