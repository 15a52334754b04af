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
"""

from __future__ import annotations

import types

import torch
from torch import nn


def active_branch(head: nn.Module) -> dict[str, nn.Module]:
    """The box and class heads that inference uses (one-to-one for end-to-end)."""
    return head.one2one if head.end2end else head.one2many


def feature_dim(head: nn.Module) -> int:
    cls_head = active_branch(head)["cls_head"]
    return int(cls_head[0][-1].in_channels)


def tapped_forward(head: nn.Module, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    box_head = active_branch(head)["box_head"]
    hidden_layers, logit_layers = head._ghostbox_split  # built once by install_tap
    bs = feats[0].shape[0]
    boxes, logits, hidden = [], [], []
    for i in range(head.nl):
        h = hidden_layers[i](feats[i])
        logits.append(logit_layers[i](h).view(bs, head.nc, -1))
        hidden.append(h.flatten(2))
        boxes.append(box_head[i](feats[i]).view(bs, 4 * head.reg_max, -1))
    raw = {"boxes": torch.cat(boxes, -1), "scores": torch.cat(logits, -1), "feats": feats}
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
    return head_out, raw["scores"], features


def install_tap(model: nn.Module) -> nn.Module:
    """Make `model(images)` return (head_out, logits, features); returns the head."""
    head = model.model[-1]
    cls_head = active_branch(head)["cls_head"]
    # The classification branch split at its last conv: hidden layers, then the logit conv.
    # Plain lists, not ModuleLists: the modules stay registered where they are.
    head._ghostbox_split = ([cls_head[i][:-1] for i in range(head.nl)], [cls_head[i][-1] for i in range(head.nl)])
    head.forward = types.MethodType(tapped_forward, head)
    return head
