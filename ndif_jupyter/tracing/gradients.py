"""GradientAccess: recording a backward pass (`with loss.backward():`), `.grad` read and assigned, and trainable
tensors whose gradients come back to the kernel.

A block takes at most one backward pass, in a trace (one forward pass): it runs after the forward pass, and the
gradients reaching module values (and their parts), weights or trainable tensors can be read, saved and replaced.
Parameters of the model stay frozen: only what the block marks gets a gradient.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch

from ..errors import TraceError
from ..ir.gradients import WHOLE_TENSORS, gradient_target
from ..ir.source import Source
from .conversion import check_assignable, event_value, fresh, meta_of, to_graph
from .module_access import ModuleAccess
from .proxy import Proxy
from .source import user_source

if TYPE_CHECKING:
    from .invoker import Invoker

AFTER_THE_FORWARD_PASS = 1 << 40
"""The event a gradient is ready at: after every module of its step has run."""


class BackwardPass:
    """`with loss.backward():` the block's backward pass, recorded when `.backward()` is called; the `with` is where
    `.grad` is read and assigned, as in PyTorch-style code (it may also be read after a bare `loss.backward()`)."""

    def __enter__(self) -> BackwardPass:
        return self

    def __exit__(self, *exc: Any) -> Literal[False]:
        return False


class GradientAccess(ModuleAccess):
    """What proxies ask of the open block for gradients (module values come from `ModuleAccess`)."""

    backward_node: int | None
    invokes: list[Invoker]
    trainables: list[tuple[Proxy, torch.Tensor]]
    trainable_grads: list[tuple[torch.Tensor, Proxy]]

    def backward(self, loss: Proxy, gradient: Any = None) -> BackwardPass:
        """Record the backward pass of `loss` (a scalar, or any shape with `gradient` of that shape)."""
        __tracebackhide__ = True
        source = user_source()
        self._check_recording(source)
        if self.kind != "trace":
            raise TraceError(
                "A backward pass is taken in a trace; generation runs without gradients.",
                source,
                "Use `model.trace(prompt)` over the tokens you want the gradient for (one forward pass).",
            )
        if self.backward_node is not None:
            raise TraceError(
                "This block already has a backward pass; a block takes one.",
                source,
                "Add the losses into one before calling `.backward()`, or use another block.",
            )
        meta = loss.meta
        if not isinstance(meta, torch.Tensor) or not meta.is_floating_point():
            raise TraceError("`.backward()` needs a floating-point tensor (the loss).", source)
        if gradient is None and meta.numel() != 1:
            raise TraceError(
                f"`.backward()` of a value of shape {list(meta.shape)} needs `gradient=` (a tensor of that shape).",
                source,
                "Reduce the loss to one number first, for example `.sum()` or `.mean()`.",
            )
        if gradient is not None:
            given = meta_of(gradient, self)
            if not isinstance(given, torch.Tensor) or given.shape != meta.shape:
                raise TraceError(f"`gradient=` must be a tensor of the loss's shape {list(meta.shape)}.", source)
        node = self._add("backward", to_graph((loss, gradient), self, source), {}, source)
        self.backward_node = node.id
        for proxy, tensor in self.trainables:
            if tensor.requires_grad:
                grad = self._grad_node(proxy, source)
                self.nodes[grad.node_id].saved = True
                self.trainable_grads.append((tensor, grad))
        return BackwardPass()

    def trainable(self, tensor: torch.Tensor) -> Proxy:
        """`tensor` in the graph as a value the backward pass gives a gradient to.

        After the block, that gradient is added to `tensor.grad` when `tensor.requires_grad` (as PyTorch's own
        backward would), so an optimizer over `tensor` can take its step in the kernel.
        """
        __tracebackhide__ = True
        source = user_source()
        self._check_recording(source)
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise TraceError(
                "`trainable` takes a floating-point tensor of the kernel (a probe, a steering vector).", source
            )
        node = self._add("trainable", (tensor.detach().clone(),), {}, source)
        proxy = Proxy(self, node.id, tensor.detach().to("meta"), (-1, -1), None)
        self.trainables.append((proxy, tensor))
        return proxy

    def grad_of(self, proxy: Proxy) -> Proxy:
        """`proxy.grad`: the gradient the backward pass brings to `proxy`."""
        __tracebackhide__ = True
        source = user_source()
        self._gradient_checks(proxy, source)
        return self._grad_node(proxy, source)

    def set_grad(self, proxy: Proxy, value: Any) -> None:
        """`proxy.grad = value`: the backward pass goes on with `value` in place of the gradient reaching `proxy`."""
        __tracebackhide__ = True
        source = user_source()
        self._gradient_checks(proxy, source)
        try:
            check_assignable(proxy.meta, meta_of(value, self))
        except ValueError as error:
            raise TraceError(f"This gradient cannot take the value: {error}.", source) from None
        args = to_graph((proxy, value), self, source)
        self._add("set_grad", args, {"shapes": [list(proxy.meta.shape)]}, source)

    def _grad_node(self, proxy: Proxy, source: Source | None) -> Proxy:
        node = self._add("grad", to_graph((proxy,), self, source), {"shapes": [list(proxy.meta.shape)]}, source)
        ready = (max(proxy.ready_at[0], 0), AFTER_THE_FORWARD_PASS)
        return Proxy(self, node.id, fresh(proxy.meta), ready, proxy.invoker)

    def _gradient_checks(self, proxy: Proxy, source: Source | None) -> None:
        __tracebackhide__ = True
        self._check_recording(source)
        if proxy.tracer is not self:
            raise TraceError("This value belongs to another block.", source)
        if self.backward_node is None:
            raise TraceError(
                "`.grad` is what a backward pass brings, and this block has none before this line.",
                source,
                "Compute a loss first and read gradients inside `with loss.backward():`.",
            )
        if not self._is_gradient_target(proxy) or not isinstance(proxy.meta, torch.Tensor):
            raise TraceError(
                "`.grad` is kept for module values (`.output`, `.input`, `.inputs`, and their parts such as "
                "`.output[0]`), weights and `tracer.trainable(...)` tensors, not for values computed from them.",
                source,
                "Take the gradient of the module value this one is computed from.",
            )
        if not proxy.meta.is_floating_point():
            raise TraceError(f"A {proxy.meta.dtype} value has no gradient.", source)

    def _is_gradient_target(self, proxy: Proxy) -> bool:
        """Whether `proxy` is a trainable tensor, a module value, or a part of one taken by integer indices into its
        tuples (`.output[0]`), not a row of a tensor."""
        target = gradient_target(self.nodes, proxy.node_id)
        if target is None:
            return False
        root = self.nodes[target[0]]
        if root.op in WHOLE_TENSORS:
            return not target[1]
        path, invoke, step = root.args[:3]
        record = self.step_record(self.invokes[invoke], step)
        value = event_value(record.modules[path], root.op.split(".")[1])
        for index in target[1]:
            if not isinstance(value, (tuple, list)):
                return False
            value = value[index]
        return True
