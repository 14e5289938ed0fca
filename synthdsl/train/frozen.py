"""The frozen prefix of a compiled graph: computed without autograd, and cacheable.

A node of the fx graph is *frozen* when nothing in it can learn: a module whose
parameters are all frozen, or an operation, whose inputs all come from the inputs
of the model or from other frozen nodes. The frozen nodes form a prefix of the
graph (by construction nothing frozen depends on something trainable), and the
rest is the trainable suffix. :func:`split_frozen` cuts the graph there into two
``GraphModule``\\ s that share the model's modules:

    prefix(*inputs)                -> (boundary values)      run under torch.no_grad()
    suffix(*inputs, *boundary)     -> the original outputs    run with autograd

The boundary values are what the suffix reads from the prefix. A frozen trunk
costs a forward pass and no backward pass, and no activations are kept for it.

With ``--cache-frozen`` the boundary values of every sample are computed once and
reused in later epochs (:class:`FrozenCache`, keyed by the sample's index). That is
only correct when the prefix gives the same values every time it sees a sample:
:func:`cache_problems` refuses a prefix holding a module that behaves randomly or
keeps state in training mode (dropout, stochastic depth, normalisation updating its
running statistics), and input augmentation.

>>> import synthdsl, torch
>>> m = synthdsl.compile_spec('''synth P input x: [B, 4]
...     h = Linear(x, out=8) |> ReLU
...     y = Linear(h, out=2)
...     freeze h
...     output y''', seed=0)
>>> split = split_frozen(m)
>>> split.prefix_nodes, split.boundary
(['h_0', 'h_1'], ['h_1'])
>>> x = torch.randn(3, 4)
>>> torch.equal(split.run((x,)), m(x))
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import fx, nn

from synthdsl.library.layers import NORM_WITH_STATS
from synthdsl.train.errors import TrainError
from synthdsl.train.feed import to_device

#: Module types whose output in training mode is random.
_RANDOM_TYPES = (nn.modules.dropout._DropoutNd, nn.AlphaDropout, nn.FeatureAlphaDropout)


def training_graph_module(model) -> fx.GraphModule:
    """The graph `forward_train` runs: the declared outputs and every value a loss reads
    (the same as the inference graph when the spec states no loss)."""
    gm = getattr(model, "train_graph_module", None)
    if gm is None:
        gm = getattr(model, "_train_graph_module", None)
    return gm if gm is not None else model.graph_module


def _module_frozen(module: nn.Module) -> bool:
    return all(not p.requires_grad for p in module.parameters())


def _attr(root: nn.Module, target: str) -> Any:
    here: Any = root
    for part in target.split("."):
        here = getattr(here, part)
    return here


@dataclass
class FrozenSplit:
    """A graph cut into a no-grad prefix and a trainable suffix."""

    original: fx.GraphModule
    prefix: fx.GraphModule | None
    suffix: fx.GraphModule
    prefix_nodes: list[str]          # compute nodes in the prefix (fx names)
    boundary: list[str]              # prefix values the suffix reads, in order
    prefix_modules: list[str] = field(default_factory=list)  # module paths the prefix runs

    @property
    def empty(self) -> bool:
        return self.prefix is None

    def run_prefix(self, inputs: Sequence[torch.Tensor]) -> tuple[Any, ...]:
        if self.prefix is None:
            return ()
        with torch.no_grad():
            out = self.prefix(*inputs)
        return tuple(out)

    def run_suffix(self, inputs: Sequence[torch.Tensor], boundary: Sequence[Any]) -> Any:
        return self.suffix(*inputs, *boundary)

    def run(self, inputs: Sequence[torch.Tensor]) -> Any:
        return self.run_suffix(inputs, self.run_prefix(inputs))

    def describe(self) -> str:
        if self.prefix is None:
            return "no frozen prefix: every node of the graph has something to train"
        mods = ", ".join(self.prefix_modules[:6]) + (
            f", ... ({len(self.prefix_modules)} in all)" if len(self.prefix_modules) > 6 else "")
        return (f"frozen prefix of {len(self.prefix_nodes)} nodes runs without autograd"
                f"{f' (modules {mods})' if mods else ''}; "
                f"{len(self.boundary)} value{'s cross' if len(self.boundary) != 1 else ' crosses'}"
                " to the trainable part")


class SuffixModule(nn.Module):
    """What DDP wraps: the trainable part of a split graph (its modules are the model's)."""

    def __init__(self, split: FrozenSplit) -> None:
        super().__init__()
        self.graph = split.suffix

    def forward(self, inputs: tuple, boundary: tuple) -> Any:
        return self.graph(*inputs, *boundary)


def changes_in_training(module: nn.Module) -> list[str]:
    """Why `module` (in its current mode) may give another output for the same input:
    randomness or running statistics in training mode."""
    problems = []
    for name, m in module.named_modules():
        if not m.training:
            continue
        where = f"'{name}' " if name else ""
        kind = type(m).__name__
        if isinstance(m, _RANDOM_TYPES) and getattr(m, "p", 0) > 0:
            problems.append(f"{where}({kind}, p={m.p}) drops values at random in training mode")
        elif ("DropPath" in kind or "DropBlock" in kind) and float(
                getattr(m, "drop_prob", 0) or 0) > 0:
            problems.append(f"{where}({kind}) drops paths at random in training mode")
        elif isinstance(m, NORM_WITH_STATS) and m.track_running_stats:
            problems.append(f"{where}({kind}) normalises with batch statistics and updates "
                            "its running statistics in training mode (policy norm = \"train\"?)")
    return problems


def frozen_nodes(gm: fx.GraphModule, cacheable: bool = False) -> set[fx.Node]:
    """The nodes of `gm` that have nothing to train and depend only on the inputs and
    other such nodes. With `cacheable`, a module without parameters that changes in
    training mode (a Dropout after a frozen trunk) is left to the trainable side, so that
    what comes before it can be cached."""
    frozen: set[fx.Node] = set()
    for node in gm.graph.nodes:
        ins = node.all_input_nodes
        if node.op == "placeholder":
            frozen.add(node)
        elif node.op == "get_attr":
            value = _attr(gm, node.target)
            if isinstance(value, nn.Module):
                ok = _module_frozen(value)
            elif isinstance(value, torch.Tensor):
                ok = not value.requires_grad
            else:
                ok = True
            if ok:
                frozen.add(node)
        elif node.op == "call_module":
            module = gm.get_submodule(node.target)
            if cacheable and not any(True for _ in module.parameters()) and \
                    changes_in_training(module):
                continue
            if _module_frozen(module) and all(i in frozen for i in ins):
                frozen.add(node)
        elif node.op in ("call_function", "call_method"):
            if all(i in frozen for i in ins):
                frozen.add(node)
    return frozen


def split_frozen(model, gm: fx.GraphModule | None = None, cacheable: bool = False
                 ) -> FrozenSplit:
    """Cut `gm` (by default the model's training graph) at the end of its frozen prefix
    (see :func:`frozen_nodes` for `cacheable`). Call it with the model in the mode it will
    run in (``model.train()`` for training)."""
    gm = training_graph_module(model) if gm is None else gm
    frozen = frozen_nodes(gm, cacheable)
    nodes = list(gm.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    # compute nodes of the prefix: not placeholders, and not bare attribute reads (those
    # are copied to whichever side uses them)
    compute = [n for n in nodes if n in frozen and n.op not in ("placeholder", "get_attr")]
    # a frozen value that nothing trainable reads is still needed if an output reads it
    outside = [n for n in nodes if n not in frozen]
    boundary: list[fx.Node] = []
    for n in compute:
        if any(u in outside for u in n.users):
            boundary.append(n)
    if not boundary:
        return FrozenSplit(gm, None, gm, [], [])
    # drop compute nodes that no boundary value needs (dead in the prefix)
    needed: set[fx.Node] = set()
    stack = list(boundary)
    while stack:
        n = stack.pop()
        if n in needed:
            continue
        needed.add(n)
        stack.extend(n.all_input_nodes)
    compute = [n for n in compute if n in needed]

    pre = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for p in placeholders:
        env[p] = pre.placeholder(p.target, type_expr=p.type)
        env[p].meta = dict(p.meta)
    for n in nodes:
        if n in needed and n.op != "placeholder":
            env[n] = pre.node_copy(n, lambda a: env[a])
    pre.output(tuple(env[b] for b in boundary))
    pre.lint()
    prefix = fx.GraphModule(gm, pre, class_name=f"{type(gm).__name__}FrozenPrefix")

    suf = fx.Graph()
    env2: dict[fx.Node, fx.Node] = {}
    for p in placeholders:
        env2[p] = suf.placeholder(p.target, type_expr=p.type)
        env2[p].meta = dict(p.meta)
    for i, b in enumerate(boundary):
        env2[b] = suf.placeholder(f"frozen_{i}_{b.name}")
        env2[b].meta = dict(b.meta)
    for n in nodes:
        if n.op == "placeholder" or n in env2:
            continue
        if n in frozen and n.op != "get_attr":
            continue  # computed by the prefix; only its boundary values cross
        if n.op == "get_attr" and not any(u in outside for u in n.users):
            continue
        env2[n] = suf.node_copy(n, lambda a: env2[a])
    suf.lint()
    suffix = fx.GraphModule(gm, suf, class_name=f"{type(gm).__name__}TrainableSuffix")
    modules = []
    for n in compute:
        if n.op == "call_module" and n.target not in modules:
            modules.append(n.target)
    return FrozenSplit(gm, prefix, suffix, [n.name for n in compute],
                       [b.name for b in boundary], modules)


# -- caching ------------------------------------------------------------------------------


def _prefix_modules(split: FrozenSplit) -> list[tuple[str, nn.Module]]:
    out = []
    assert split.prefix is not None
    for node in split.prefix.graph.nodes:
        if node.op == "call_module":
            out.append((node.target, split.prefix.get_submodule(node.target)))
        elif node.op == "get_attr":
            value = _attr(split.prefix, node.target)
            if isinstance(value, nn.Module):
                out.append((node.target, value))
    return out


def cache_problems(split: FrozenSplit, augment: bool = False) -> list[str]:
    """Why the prefix's outputs could differ between two epochs (empty when they cannot).
    Call it with the model in training mode."""
    if split.prefix is None:
        return ["the graph has no frozen prefix to cache (every node has something to "
                "train)"]
    problems = []
    if augment:
        problems.append("the inputs are augmented, so each epoch sees different images")
    for path, module in _prefix_modules(split):
        for problem in changes_in_training(module):
            problems.append(f"'{path}' {problem}" if not problem.startswith("'") else
                            f"'{path}.{problem[1:]}")
    return problems


def check_deterministic(split: FrozenSplit, inputs: Sequence[torch.Tensor]) -> str | None:
    """Run the prefix twice on the same batch: a difference means it is not cacheable
    (something random that :func:`cache_problems` does not know by type)."""
    if split.prefix is None:
        return None
    devices = {t.device.type for t in inputs}
    state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        a = split.run_prefix(inputs)
        b = split.run_prefix(inputs)
    finally:  # leave the random streams as they were: caching must not change training
        torch.set_rng_state(state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
    for name, x, y in zip(split.boundary, a, b):
        if not isinstance(x, torch.Tensor):
            return f"the prefix value '{name}' is a {type(x).__name__}, not a tensor"
        same = torch.equal(x, y) if devices == {"cpu"} else torch.allclose(
            x, y, rtol=1e-5, atol=1e-6)
        if not same:
            return (f"the prefix value '{name}' differed between two runs on the same batch "
                    "(something in the frozen part behaves randomly in training mode)")
    return None


class FrozenCache:
    """Boundary values per sample index, filled as samples are first seen.

    ``get(idx)`` gives the batch's values when every index is cached (else None);
    ``put(idx, values)`` stores them. Values live on `device` (the model's, by default).
    """

    def __init__(self, size: int, device: torch.device | str | None = None) -> None:
        self.size = size
        self.device = device
        self.filled = torch.zeros(size, dtype=torch.bool)
        self.store: list[torch.Tensor] | None = None
        self.hits = self.misses = 0

    @property
    def complete(self) -> bool:
        return bool(self.filled.all())

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.store or ())

    def get(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        if self.store is None or not bool(self.filled[idx].all()):
            self.misses += len(idx)
            return None
        self.hits += len(idx)
        where = idx.to(self.store[0].device)
        return tuple(t[where] for t in self.store)

    def put(self, idx: torch.Tensor, values: Sequence[torch.Tensor]) -> None:
        if self.store is None:
            self.store = [torch.zeros((self.size, *v.shape[1:]), dtype=v.dtype,
                                      device=self.device or v.device) for v in values]
        where = idx.to(self.store[0].device)
        for t, v in zip(self.store, values):
            t[where] = v.detach().to(t.device)
        self.filled[idx] = True


def frozen_caches(trainer) -> tuple["FrozenCache | None", "FrozenCache | None"]:
    """The caches of a trainer's frozen prefix and teacher (``--cache-frozen``), or T001
    with every reason the prefix's outputs can change between epochs."""
    trainer.train_mode()
    problems = cache_problems(trainer.split, augment=trainer.augments)
    if not problems:
        pos = torch.arange(min(4, len(trainer.data)))
        x = trainer.preprocess.inputs(to_device(trainer.data.images(pos), trainer.device))
        problem = check_deterministic(trainer.split, x)
        problems = [problem] if problem else []
    if problems and trainer.split.empty and trainer.teacher is not None:
        problems = []  # nothing to cache but the teacher: that is fine
    elif problems:
        raise TrainError("--cache-frozen: the frozen part's outputs can change between "
                         "epochs, so they cannot be reused:\n  - " + "\n  - ".join(problems),
                         hint="train without --cache-frozen (the frozen prefix still runs "
                         "without autograd), or freeze the normalisation layers and drop "
                         "dropout/augmentation in the frozen part")
    size = len(trainer.data)
    return (None if trainer.split.empty else FrozenCache(size, trainer.device),
            None if trainer.teacher is None else FrozenCache(size, trainer.device))


def cache_report(cache: "FrozenCache | None", teacher_cache: "FrozenCache | None"
                 ) -> dict[str, Any] | None:
    """An epoch's use of the caches (hits, misses, complete, megabytes), which then start
    counting again; None without caches."""
    if cache is None and teacher_cache is None:
        return None
    c = cache or teacher_cache
    info = {"hits": c.hits, "misses": c.misses, "complete": c.complete,
            "megabytes": round(sum(x.nbytes for x in (cache, teacher_cache) if x) / 2 ** 20, 3)}
    for x in (cache, teacher_cache):
        if x is not None:
            x.hits = x.misses = 0
    return info
