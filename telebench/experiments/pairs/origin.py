"""Where a merged train-case value was written, so an error or note names the key the user actually wrote,
and the teleport settings one trial gets from its case, optimizer and arm."""

from __future__ import annotations

from dataclasses import dataclass, field

from telebench.config.errors import key_path
from telebench.config.merge import Loc, is_set, written_at
from telebench.experiments.pairs.schema import ArmConfig, Case, OptimizerConfig, SuiteFile, TeleportConfig


@dataclass
class Origin:
    """Where a merged value came from, so an error names the key the user actually wrote."""

    doc: SuiteFile
    index: int
    options: dict[str, str] = field(default_factory=dict)  # case key -> the option that overrode it
    arms: list[int | None] | None = None  # after --arms: each arm's index in the file (None: added)

    def case_key(self, *keys: str | int) -> str:
        if keys[0] in self.options:
            return self.options[str(keys[0])]
        return key_path(written_at(self.doc.cases[self.index], self.doc.defaults, ("cases", self.index), keys) + keys)

    def teleport_key(self, opt: int, arm: int, name: str) -> str:
        """The most specific level that set teleport `name`: arm, optimizer, case, then defaults."""
        case, defaults = self.doc.cases[self.index], self.doc.defaults
        written = arm if self.arms is None else self.arms[arm]
        levels: list[Loc] = [("optimizers", opt, "teleport", name), ("teleport", name)]
        if written is not None:
            levels.insert(0, ("arms", written, "teleport", name))
        for keys in levels:
            for base, model in ((("cases", self.index), case), (("defaults",), defaults)):
                if is_set(model, keys):
                    return key_path(base + keys)
        return f"teleport.{name} (default)"


def teleport_settings(case: Case, optimizer: OptimizerConfig, arm: ArmConfig) -> TeleportConfig:
    """The settings one trial teleports with: case ← optimizer ← arm (the case already holds defaults)."""
    return TeleportConfig(**{**case.teleport.given(), **optimizer.teleport.given(), **arm.teleport.given()})
