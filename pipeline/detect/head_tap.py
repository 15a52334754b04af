"""Read class logits and box features out of an Ultralytics Detect head.

The M-Hood box feature is what the head computed at the anchor that produced a box: the
classification branch's hidden output (c3 channels) and the pre-sigmoid class logits.
`tapped_forward` replaces the head's forward on ghostbox's own copy of the model: it runs
the same modules in the same order as `Detect.forward_head`, so boxes and confidences are
bit-identical to Ultralytics', and returns the dense logits and features beside them.

Outputs, for a batch of B images with A anchors:
    head_out  NMS heads:        (B, 4 + nc, A)  decoded xywh boxes and sigmoid scores,
                                exactly what Ultralytics feeds to its NMS
              end-to-end heads: (B, k, 7)  [x1, y1, x2, y2, conf, class, anchor index]
                                after the head's own top-k (k = max_det)
    logits    (B, nc, A) pre-sigmoid class logits
    features  (B, D, A)  classification-branch hidden output, D = c3
    roi maps  the maps the detector RoI-aligns box features from when asked
              (`box_features="head+roi"`): the head's inputs (one per pyramid level), then the
              backbone's last output at each of the head's strides (`backbone_taps`)
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, Protocol, cast

import torch
from torch import nn


class TappedHead(Protocol):
    """An Ultralytics Detect head, as ghostbox uses it (Ultralytics does not annotate its modules).

    The `_ghostbox_*` attributes are the ones `install_tap` adds.
    """

    nc: int
    nl: int
    reg_max: int
    stride: torch.Tensor
    end2end: bool
    max_det: int
    agnostic_nms: bool
    dynamic: bool
    export: bool
    format: str
    # {"box_head": ..., "cls_head": ...}: nn.ModuleLists of one nn.Sequential per pyramid level
    one2one: dict[str, Any]
    one2many: dict[str, Any]
    forward: Callable[..., Any]
    _ghostbox_taps: list[int]
    _ghostbox_backbone_channels: tuple[int, ...]
    _ghostbox_captured: dict[int, torch.Tensor]
    _ghostbox_split: tuple[list[nn.Module], list[nn.Module]]

    def _inference(self, x: dict[str, Any]) -> torch.Tensor: ...

    def postprocess(self, preds: torch.Tensor) -> torch.Tensor: ...


def model_layers(model: nn.Module) -> nn.Sequential:
    """An Ultralytics model's layers, `model.model` (torch types any Module attribute as Tensor | Module)."""
    return cast(nn.Sequential, model.model)


def detect_head(model: nn.Module) -> TappedHead:
    """The model's last layer: its Detect head (`_check_detection_head` in torch_backend vets the type)."""
    return cast(TappedHead, model_layers(model)[-1])


def active_branch(head: TappedHead) -> dict[str, Any]:
    """The box and class heads that inference uses (one-to-one for end-to-end)."""
    return head.one2one if head.end2end else head.one2many


def feature_dim(head: TappedHead) -> int:
    cls_head = active_branch(head)["cls_head"]
    return int(cls_head[0][-1].in_channels)


def backbone_taps(model: nn.Module) -> list[tuple[int, int]]:
    """(layer index, channels) of the backbone's last layer at each of the head's strides, in level order.

    The neck has mixed these maps with the other scales; the backbone's own view of a box
    (its shape and texture at that scale) is what tells near look-alikes apart. Found from
    the architecture (the yaml's backbone length) and one small forward pass; [] when the
    model does not say where its backbone ends.
    """
    layers = getattr(model, "model", None)
    n_backbone = len((getattr(model, "yaml", None) or {}).get("backbone", []))
    if layers is None:
        return []
    head = layers[-1]
    if not n_backbone or not hasattr(head, "stride"):
        return []
    sizes: dict[int, tuple[int, int]] = {}  # layer -> (width, channels)
    hooks = [layers[i].register_forward_hook(lambda m, a, out, i=i: sizes.__setitem__(i, tuple(out.shape[-3::2])[::-1]))
             for i in range(n_backbone)]
    # the smallest input whose maps still tell each stride apart (a width of 4 at the coarsest): only the
    # shapes are read, and a forward pass costs seconds on a CPU at large sizes
    side = 4 * int(max(head.stride.tolist()))
    param = next(model.parameters())
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, side, side, dtype=param.dtype, device=param.device))
    except Exception:  # noqa: BLE001 - an odd architecture just goes without backbone features
        return []
    finally:
        for hook in hooks:
            hook.remove()
    taps = []
    for stride in head.stride.tolist():
        at_stride = [i for i, (width, _) in sizes.items() if width * int(stride) == side]
        if not at_stride:
            return []
        taps.append((max(at_stride), sizes[max(at_stride)][1]))
    return taps


def roi_channels(model: nn.Module) -> tuple[int, ...]:
    """Channels of the RoI maps: the head's inputs per level, then the backbone taps."""
    head = detect_head(model)
    neck = [int(branch[0].conv.in_channels) for branch in active_branch(head)["box_head"]]
    return tuple(neck) + tuple(int(c) for c in getattr(head, "_ghostbox_backbone_channels", ()))


def tapped_forward(head: TappedHead, feats: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    box_head = active_branch(head)["box_head"]
    hidden_layers, logit_layers = head._ghostbox_split  # built once by install_tap
    bs = feats[0].shape[0]
    boxes, logits, hidden = [], [], []
    for i in range(head.nl):
        h = hidden_layers[i](feats[i])
        logits.append(logit_layers[i](h).view(bs, head.nc, -1))
        hidden.append(h.flatten(2))
        boxes.append(box_head[i](feats[i]).view(bs, 4 * head.reg_max, -1))
    scores = torch.cat(logits, -1)
    raw = {"boxes": torch.cat(boxes, -1), "scores": scores, "feats": feats}
    decoded = head._inference(raw)
    features = torch.cat(hidden, -1)
    if head.end2end:
        # The anchor index rides through the head's top-k as an extra channel; float32
        # because fp16 holds integers exactly only up to 2048.
        anchors = torch.arange(decoded.shape[-1], device=decoded.device, dtype=torch.float32)
        anchors = anchors.view(1, 1, -1).expand(bs, 1, -1)
        head_out = head.postprocess(torch.cat([decoded.float(), anchors], 1).permute(0, 2, 1))
    else:
        head_out = decoded
    backbone = [head._ghostbox_captured.pop(i) for i in head._ghostbox_taps]
    return (head_out, scores, features, *feats, *backbone)


def install_tap(model: nn.Module) -> TappedHead:
    """Make `model(images)` return (head_out, logits, features, *roi_maps); returns the head."""
    taps = backbone_taps(model)
    head = detect_head(model)
    head._ghostbox_taps = [i for i, _ in taps]
    head._ghostbox_backbone_channels = tuple(c for _, c in taps)
    head._ghostbox_captured = {}
    layers = model_layers(model)
    for i, _ in taps:
        layers[i].register_forward_hook(lambda m, a, out, i=i: head._ghostbox_captured.__setitem__(i, out))
    cls_head = active_branch(head)["cls_head"]
    # The classification branch split at its last conv: hidden layers, then the logit conv.
    # Plain lists, not ModuleLists: the modules stay registered where they are.
    head._ghostbox_split = ([cls_head[i][:-1] for i in range(head.nl)], [cls_head[i][-1] for i in range(head.nl)])
    head.forward = types.MethodType(tapped_forward, head)
    return head
