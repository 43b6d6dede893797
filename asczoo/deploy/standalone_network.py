"""A model as source code that needs only torch: ``torch.nn`` layers and a generated ``forward``.

A DCASE inference package must install where only the challenge template's requirements are (torch,
torchaudio, numpy, soundfile, ...): neither asczoo nor timm nor pluggy is there. :func:`network_source`
captures the model's forward pass with TorchDynamo (``fullgraph``, batch dimension dynamic) with the
built-in ``torch.nn`` layers kept as calls (``inline_inbuilt_nn_modules`` off), so the graph is the
model's own arithmetic between ``Conv2d``, ``BatchNorm2d``, ``Linear``, ... layers; the code written
rebuilds those layers at their original names and runs that graph.

Why layers and not a plain exported graph: the organisers count complexity with torchinfo, which
finds multiply-accumulates by hooking ``Conv*`` and ``Linear`` modules; a graph of ``aten`` calls would
count as 0 MACs. The layers here are the original objects' types with their original constructor
arguments, so torchinfo counts the same as on the asczoo model, and the state dict keys are the
original ones (``backbone.model.layer1.0.conv1.weight``).

What cannot be written is refused with :class:`StandaloneError` (a layer outside ``torch.nn``, a
graph break, a constant tensor made during tracing); :func:`check_network` runs the written code
against the model at several batch sizes before a package is written.
"""

from __future__ import annotations

import builtins
import math
import operator
import re
from typing import Any

import torch
from torch import nn

#: modules the generated code may name (as ``torch``, ``math``, ...), besides Python's builtins
_ALLOWED_GLOBALS = {"torch": torch, "math": math, "operator": operator}


class StandaloneError(ValueError):
    """The model cannot be written as torch-only source code; the message says which part and why."""


def _capture(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    graphs: list[torch.fx.GraphModule] = []

    def keep(gm, inputs):
        graphs.append(gm)
        return gm.forward

    import torch._dynamo

    torch._dynamo.reset()
    x = example.clone()
    torch._dynamo.mark_dynamic(x, 0)
    try:
        with torch.no_grad(), torch._dynamo.config.patch(inline_inbuilt_nn_modules=False):
            torch.compile(model, backend=keep, fullgraph=True)(x)
    except Exception as exc:  # noqa: BLE001 - dynamo raises many kinds; the message says which
        raise StandaloneError(f"the forward pass of {getattr(model, 'name', type(model).__name__)} cannot be "
                              f"captured as one graph ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    finally:
        torch._dynamo.reset()
    if len(graphs) != 1:
        raise StandaloneError(f"the forward pass gave {len(graphs)} graphs, expected one")
    return graphs[0]


def _leaf_constructor(name: str, module: nn.Module) -> str:
    """``torch.nn.Conv2d(3, 16, kernel_size=(7, 7), ...)``: the layer's own repr, which for the layers
    of ``torch.nn`` is its constructor call; checked by building it and comparing."""
    kind = type(module)
    if not kind.__module__.startswith("torch.nn.modules") or getattr(nn, kind.__name__, None) is not kind:
        raise StandaloneError(f"layer {name!r} is a {kind.__module__}.{kind.__name__}, not a torch.nn layer; "
                              "the standalone network can hold torch.nn layers only")
    text = f"torch.nn.{repr(module)}"
    try:
        rebuilt = eval(text, {"torch": torch})  # noqa: S307 - our own repr of a torch.nn layer
    except Exception as exc:  # noqa: BLE001
        raise StandaloneError(f"layer {name!r} ({text}) cannot be rebuilt from its repr: {exc}") from exc
    same_state = {k: (v.shape, v.dtype) for k, v in rebuilt.state_dict().items()} == \
        {k: (v.shape, torch.float32 if v.is_floating_point() else v.dtype) for k, v in module.state_dict().items()}
    if type(rebuilt) is not kind or rebuilt.extra_repr() != module.extra_repr() or not same_state:
        raise StandaloneError(f"layer {name!r}: {text} does not rebuild the same layer")
    return text


def _original_module(model: nn.Module, node: torch.fx.Node) -> nn.Module | None:
    """The model's own layer behind a ``call_module`` node: dynamo records the source expression of
    each layer (``getattr(L['self'].backbone.layer1, '0').conv1``) in ``nn_module_stack``."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    try:
        return eval(path, {"__builtins__": {}, "getattr": getattr, "list": list, "dict": dict, "L": {"self": model}})  # noqa: S307 - dynamo's own record
    except Exception:  # noqa: BLE001
        return None


def _follow_input(graph: torch.fx.Graph, x: torch.fx.Node, example: torch.Tensor) -> None:
    """Tracing fixes ``device=x.device`` and ``dtype=x.dtype`` to the example's values (``cpu``,
    ``float16``); point them back at the input's, so the network runs on a GPU (``use_cuda``) and in
    float32 after ``.float()`` (the organisers' counter profiles ``copy.deepcopy(model).float()``)."""
    with graph.inserting_after(x):
        x_device = graph.call_function(getattr, (x, "device"))
    with graph.inserting_after(x_device):
        x_dtype = graph.call_function(getattr, (x, "dtype"))

    def follow(value):
        if isinstance(value, torch.device) and value == example.device:
            return x_device
        if isinstance(value, torch.dtype) and value == example.dtype and value.is_floating_point:
            return x_dtype
        if isinstance(value, (list, tuple)):
            return type(value)(follow(v) for v in value)
        if isinstance(value, dict):
            return {k: follow(v) for k, v in value.items()}
        return value

    for node in graph.nodes:
        if node not in (x_device, x_dtype):
            node.args, node.kwargs = follow(node.args), follow(node.kwargs)


def network_source(model: nn.Module, example: torch.Tensor, *, docstring: str) -> str:
    """Python source of a module ``Network`` that computes ``model(x)`` for inputs shaped like
    ``example`` (any batch size), from torch alone; its ``state_dict`` keys are the model's."""
    gm = _capture(model, example)
    names = {id(m): n for n, m in model.named_modules()}
    tensors = {id(t): n for n, t in [*model.named_parameters(), *model.named_buffers()]}
    graph = gm.graph
    leaves: dict[str, str] = {}
    for node in list(graph.nodes):
        if node.op == "call_module":
            module = _original_module(model, node)
            original = names.get(id(module))
            if original is None:
                raise StandaloneError(f"layer {node.target!r} of the captured graph is not one of the model's")
            leaves[original] = _leaf_constructor(original, module)
            node.target = original
        elif node.op == "get_attr":
            value = getattr(gm, node.target) if "." not in node.target else gm.get_parameter(node.target)
            original = tensors.get(id(value))
            if original is None:
                raise StandaloneError(f"the captured graph holds a tensor {node.target!r} that is not a parameter or "
                                      "buffer of the model (a constant made during the forward pass)")
            node.target = original
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    inputs = [n for n in placeholders if isinstance(n.meta.get("example_value"), torch.Tensor)]
    if len(inputs) != 1:
        raise StandaloneError(f"the captured graph takes {len(inputs)} tensors, expected one (the model input)")
    x = inputs[0]
    shape = x.meta["example_value"].shape
    for node in placeholders:
        if node is x:
            continue
        value = node.meta.get("example_value")
        dims = [i for i, size in enumerate(shape) if isinstance(value, torch.SymInt) and str(size) == str(value)]
        if not dims:
            raise StandaloneError(f"the captured graph takes {node.name} ({value!r}), which is not a size of the input")
        with graph.inserting_after(x):
            size = graph.call_method("size", (x, dims[0]))
        node.replace_all_uses_with(size)
        graph.erase_node(node)
    _follow_input(graph, x, example)
    code = graph.python_code(root_module="self")
    stray = sorted(k for k in code.globals if k not in _ALLOWED_GLOBALS and not hasattr(builtins, k)
                   and k not in ("inf", "nan", "device", "NoneType") and re.search(rf"\b{re.escape(k)}\b", code.src))
    if stray:
        raise StandaloneError(f"the captured graph calls {stray}, which are not part of torch")
    own = {n for n in tensors.values()}
    layer_tensors = {f"{leaf}.{k}" for leaf in leaves for k in model.get_submodule(leaf).state_dict()}
    loose = []
    for name in sorted(own - layer_tensors):
        value = model.get_parameter(name) if name in dict(model.named_parameters()) else model.get_buffer(name)
        kind = "parameter" if isinstance(value, nn.Parameter) else "buffer"
        loose.append(f"        _tensor(self, {name!r}, {kind!r}, {tuple(value.shape)!r})")
    src = code.src.strip("\n").replace("def forward(self", "def _graph(self", 1)
    body = "\n".join("    " + line if line else "" for line in src.splitlines())
    lines = [
        f'"""{docstring}"""',
        "",
        "# Generated by asczoo (asczoo.deploy.standalone_network): do not edit; rebuild with asczoo package.",
        "import math",
        "import operator",
        "",
        "import torch",
        "",
        "inf, nan = math.inf, math.nan",
        "device, NoneType = torch.device, type(None)",
        "",
        "",
        "def _place(root, name, module):",
        "    *path, last = name.split('.')",
        "    for part in path:",
        "        if not hasattr(root, part):",
        "            root.add_module(part, torch.nn.Module())",
        "        root = getattr(root, part)",
        "    root.add_module(last, module)",
        "",
        "",
        "def _tensor(root, name, kind, shape):",
        "    *path, last = name.split('.')",
        "    for part in path:",
        "        if not hasattr(root, part):",
        "            root.add_module(part, torch.nn.Module())",
        "        root = getattr(root, part)",
        "    value = torch.zeros(shape)",
        "    if kind == 'parameter':",
        "        root.register_parameter(last, torch.nn.Parameter(value, requires_grad=False))",
        "    else:",
        "        root.register_buffer(last, value)",
        "",
        "",
        "class Network(torch.nn.Module):",
        f"    #: one input (batch, {', '.join(str(int(s)) for s in shape[1:])})",
        f"    input_shape = {tuple(int(s) for s in shape[1:])!r}",
        "",
        "    def __init__(self):",
        "        super().__init__()",
        *[f"        _place(self, {name!r}, {text})" for name, text in leaves.items()],
        *loose,
        "",
        "    def forward(self, x):",
        "        if tuple(x.shape[1:]) != self.input_shape:",
        "            raise ValueError(f'expected model inputs (batch, *{self.input_shape}), got shape {tuple(x.shape)}')",
        "        out = self._graph(x)",
        "        return out[0] if isinstance(out, (tuple, list)) else out",
        "",
        body,
        "",
    ]
    return "\n".join(lines)


def load_source(source: str, name: str = "network") -> Any:
    """The module object of generated network ``source`` (to check it before a package is written)."""
    import types

    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)  # noqa: S102 - source we generated just now
    return module


def check_network(source: str, model: nn.Module, example: torch.Tensor, *, atol: float) -> None:
    """Build ``Network`` from ``source`` with the model's weights and compare it with ``model`` at
    batch sizes 1, 2 and 3; refuse (:class:`StandaloneError`) on any difference beyond ``atol``."""
    network = load_source(source).Network()
    state = model.state_dict()
    network.load_state_dict({k: state[k] for k in network.state_dict()}, strict=True, assign=True)
    network.eval()
    model.eval()
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 2, 3):
        x = torch.randn((batch, *example.shape[1:]), generator=generator).to(example.dtype)
        with torch.no_grad():
            want, got = model(x), network(x)
        if want.shape != got.shape or not torch.allclose(want.float(), got.float(), atol=atol, rtol=0):
            raise StandaloneError(f"the standalone network differs from the model at batch {batch} "
                                  f"(largest difference {(want.float() - got.float()).abs().max().item():.3g})")
    import copy

    x = x.float()
    try:
        with torch.no_grad():
            got = copy.deepcopy(network).float()(x)  # as the organisers' counter runs it
            want = copy.deepcopy(model).float()(x)
            copy.deepcopy(network).to("meta")(x.to("meta"))  # on another device, as with use_cuda
    except Exception as exc:  # noqa: BLE001
        raise StandaloneError(f"the standalone network does not run in float32 or on another device: {exc}") from exc
    if not torch.allclose(want, got, atol=atol, rtol=0):
        raise StandaloneError("the standalone network in float32 differs from the model in float32")
