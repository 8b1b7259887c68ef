"""K copies of one network trained as a single computation (a "bank"): grouped convolutions, per-member BatchNorm.

Small classifiers trained one at a time leave a CPU's vector units and, far more, a GPU waiting on per-layer
overheads (DESIGN §7: 0.1 % of an H200 at batch 64). A bank lays the K members side by side along the channel
axis: every `Conv2d(c_in, c_out, groups=g)` becomes `Conv2d(K*c_in, K*c_out, groups=K*g)`, so member k's
channels only ever see member k's channels; `BatchNorm2d(c)` becomes `BatchNorm2d(K*c)`, whose per-channel
statistics are exactly per-member ones; a `Linear` becomes one batched matmul over a [K, out, in] weight.
Every other layer (ReLU, pooling, flatten, residual additions) acts per channel or per element already.

The maths of each member is therefore that of the network trained alone (same weights, same batch, same
gradients; only the floating-point summation order of the kernels differs), and element-wise optimisers
(SGD with momentum and weight decay) update each member as they would a separate network. A member's
weights unpack to the template's own `state_dict`, loadable into a plain network.

Input: [N, K*C, H, W] (member k's images in channel group k). Output: [N, K, classes].
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class GroupedLinear(nn.Module):
    """K independent `Linear(in, out)` layers as one batched matmul: [N, K*in] or [N, K, in] -> [N, K, out]."""

    def __init__(self, k: int, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.k = k
        self.weight = nn.Parameter(torch.empty(k, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(k, out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.k, -1).transpose(0, 1)  # [K, N, in]
        y = torch.bmm(x, self.weight.transpose(1, 2))  # [K, N, out]
        if self.bias is not None:
            y = y + self.bias[:, None, :]
        return y.transpose(0, 1)


def _widened(layer: nn.Module, k: int) -> nn.Module | None:
    """The K-member version of one layer that holds parameters; None for layers that need none."""
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros":
            raise ValueError(f"cannot bank {layer}: padding_mode {layer.padding_mode!r}")
        return nn.Conv2d(layer.in_channels * k, layer.out_channels * k, layer.kernel_size, layer.stride,
                         layer.padding, layer.dilation, layer.groups * k, layer.bias is not None)
    if isinstance(layer, nn.BatchNorm2d):
        return nn.BatchNorm2d(layer.num_features * k, layer.eps, layer.momentum, layer.affine,
                              layer.track_running_stats)
    if isinstance(layer, nn.Linear):
        return GroupedLinear(k, layer.in_features, layer.out_features, layer.bias is not None)
    return None


def _widen_children(module: nn.Module, k: int) -> None:
    for name, child in module.named_children():
        wide = _widened(child, k)
        if wide is not None:
            setattr(module, name, wide)
            continue
        if any(True for _ in child.parameters(recurse=False)) or any(True for _ in child.buffers(recurse=False)):
            raise ValueError(f"cannot bank layer {name} ({type(child).__name__}): only Conv2d, BatchNorm2d and "
                             "Linear layers hold weights in a bankable network")
        _widen_children(child, k)


class ModelBank(nn.Module):
    """K members of one architecture, packed from their own initial weights (one state_dict each)."""

    def __init__(self, template: nn.Module, member_states: list[dict[str, torch.Tensor]]):
        super().__init__()
        self.k = len(member_states)
        if self.k < 1:
            raise ValueError("a bank needs at least one member")
        net = copy.deepcopy(template)
        _widen_children(net, self.k)
        self.net = net
        wide = self.net.state_dict()
        # How each tensor packs: "shared" (a scalar), "stack" (GroupedLinear: a new first axis), "cat" (axis 0).
        self._layout = {key: ("shared" if t.dim() == 0 else "stack" if wide[key].dim() == t.dim() + 1 else "cat")
                        for key, t in template.state_dict().items()}
        self.net.load_state_dict(pack(member_states, wide, self._layout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's weights as the template network's own state_dict (a CPU copy)."""
        state = self.net.state_dict()
        out = {}
        for key, how in self._layout.items():
            t = state[key]
            part = t if how == "shared" else t[i] if how == "stack" else t.view(self.k, -1, *t.shape[1:])[i]
            out[key] = part.detach().cpu().clone()
        return out


def pack(member_states: list[dict[str, torch.Tensor]], bank_state: dict[str, torch.Tensor],
         layout: dict[str, str]) -> dict[str, torch.Tensor]:
    """The bank's state_dict from its members' (see ModelBank._layout)."""
    out = {}
    for key, how in layout.items():
        parts = [state[key] for state in member_states]
        if how == "shared":
            if any(not torch.equal(p, parts[0]) for p in parts):
                raise ValueError(f"{key}: the members disagree on a value the bank shares")
            out[key] = parts[0].clone()
        else:
            out[key] = torch.stack(parts) if how == "stack" else torch.cat(parts)
        if out[key].shape != bank_state[key].shape:
            raise ValueError(f"{key}: members pack to {tuple(out[key].shape)}, the bank holds "
                             f"{tuple(bank_state[key].shape)}")
    return out
