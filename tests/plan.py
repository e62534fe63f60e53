"""The planned cases of a layer x framework x dtype: every declared edge the framework
can run, then configurations it has not seen yet.

A plan is drawn by ``strategies.draw_case`` from seeded generators, the seeds a
function of the layer, dtype and slot only: the same cases on every machine,
from pytest or ``gradparity run``, under xdist or not, and for every framework
that can express them (so two frameworks are judged on the same cases). Slot
by slot:

1. one case per ``Edge`` of the layer, in declared order: drawn with the edge's
   ``force`` and edge values made frequent until the case reaches it; an edge
   every draw of which the framework refuses is not runnable there, with the
   framework's reason (``edges``);
2. then free draws, each a configuration (shapes and attributes) not planned
   yet, where the space has one left; the configurations the framework refuses
   are counted by reason (``refused``): what it cannot express, from draws.

Nothing here runs a framework: a runner is asked only whether it can express
a configuration (``refusal``).
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from dataclasses import dataclass, field

from gradparity.reference import LAYERS, Case

from .strategies import Refused, Seeded, draw_case

# Draws per slot before it gives up: an edge that no draw reaches, or a configuration
# space the framework refuses almost all of (Keras' Conv2DTranspose expresses about 1
# configuration in 20: no groups, no unbatched input, no stride with dilation). A draw
# stops before its values when the framework refuses it: a few microseconds each.
ATTEMPTS = 512
NEW_CONFIGURATION_ATTEMPTS = 64  # accepted draws a free slot looks through for a configuration not planned yet


@dataclass
class Plan:
    layer: str
    framework: str
    dtype: str
    cases: list = field(default_factory=list)
    slots: list = field(default_factory=list)  # per case: the edge it was planned for, "" for a free draw
    edges: dict = field(default_factory=dict)  # edge -> "" (planned) or why it is not (the framework's reason)
    refused: Counter = field(default_factory=Counter)  # free draws the framework cannot express, by reason
    exhausted: bool = False  # the free draws found no configuration left that was not planned already

    def census(self) -> dict:
        """What the report needs of the plan (plain data)."""
        return {"layer": self.layer, "framework": self.framework, "dtype": self.dtype, "edges": dict(self.edges),
                "refused": dict(self.refused), "exhausted": self.exhausted, "planned": len(self.cases)}


def config_key(case: Case) -> str:
    """A case's configuration: its attributes and the shapes of its arrays, not their values."""
    return case.describe()


def _seed(*parts) -> int:
    digest = hashlib.sha256("|".join(map(str, ("gradparity-plan", *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "little")


@functools.lru_cache(maxsize=None)
def _plan(layer: str, framework: str, dtype: str, size: int, runner) -> Plan:
    plan, seen = Plan(layer, framework, dtype), set()
    for edge in LAYERS[layer].edges:
        if len(plan.cases) >= size:
            plan.edges[edge.name] = f"not planned: the profile plans {size} cases"
            continue
        refusals, refused, found = Counter(), 0, None
        for attempt in range(ATTEMPTS):
            case = draw_case(Seeded(_seed(layer, dtype, edge.name, attempt)), layer, dtype, runner=runner,
                             force=edge.force, lean=True)
            if isinstance(case, Refused):
                refusals.update(case.reasons)
                refused += 1
            elif edge.reached(case):
                found = case
                break
        if found is None:
            # The edge's reason is the one every draw met; draws refused for other reasons besides do not count.
            shared = [why for why, n in refusals.items() if n == ATTEMPTS]
            plan.edges[edge.name] = (" and ".join(shared) if shared else
                                     "; ".join(f"{why} ({n} of {ATTEMPTS} draws)" for why, n in refusals.most_common())
                                     if refused == ATTEMPTS else
                                     f"no draw of {ATTEMPTS} reached it ({refused} refused)")
            continue
        plan.edges[edge.name] = ""
        plan.cases.append(found)
        plan.slots.append(edge.name)
        seen.add(config_key(found))
    slot = 0
    while len(plan.cases) < size:
        fallback, accepted = None, 0
        for attempt in range(ATTEMPTS):
            case = draw_case(Seeded(_seed(layer, dtype, "free", slot, attempt)), layer, dtype, runner=runner)
            if isinstance(case, Refused):
                plan.refused[case.reasons[0]] += 1  # counted once, by its first reason
                continue
            if config_key(case) not in seen:
                break
            fallback, accepted = fallback or case, accepted + 1
            if accepted >= NEW_CONFIGURATION_ATTEMPTS:
                case, plan.exhausted = fallback, True
                break
        else:
            case, plan.exhausted = fallback, fallback is not None
        slot += 1
        if case is None:
            break  # every draw refused: nothing of this layer runs here
        plan.cases.append(case)
        plan.slots.append("")
        seen.add(config_key(case))
    return plan


def plan(layer: str, framework: str, dtype: str, size: int, runner) -> Plan:
    """The plan of ``size`` cases for ``layer`` in ``dtype`` as ``runner`` (named ``framework``)
    can run them (computed once per process)."""
    return _plan(layer, framework, dtype, size, runner)
