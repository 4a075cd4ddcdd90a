"""The backbones cut open: one forward pass gives the embedding's feature map and the
region map's, so a photo's nine region vectors cost no second pass.

- The embedding is the mean of the last feature map (7x7 at 224 px): exactly what the
  models' own global average pool computed before.
- The region vectors pool the stride-16 feature map (14x14: ResNet50's layer3, 1024
  channels; Lite0's fifth stage, 112 channels). The last map's units each see the whole
  photo: measured on the series photos with Lite0 (docs/validity.md), a change confined
  to one ninth of the photo raised its own region highest in 57% of cases on the 7x7 map
  and in 96-100% on the 14x14 one, whose units see about a third of it.
"""

from __future__ import annotations

import torch


class Lite0Trunk(torch.nn.Module):
    """timm's EfficientNet-Lite0 ``forward_features``, split after its fifth stage."""

    def __init__(self, model: torch.nn.Module, split: int = 5) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(model.conv_stem, model.bn1, *model.blocks[:split])
        self.head = torch.nn.Sequential(*model.blocks[split:], model.conv_head, model.bn2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        middle = self.stem(x)
        return middle, self.head(middle)


class ResNetTrunk(torch.nn.Module):
    """torchvision's ResNet50 without avgpool and fc, split after layer3."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        children = dict(model.named_children())
        order = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")
        self.stem = torch.nn.Sequential(*(children[n] for n in order))
        self.head = children["layer4"]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        middle = self.stem(x)
        return middle, self.head(middle)


# Channels of the region map, per architecture.
REGION_CHANNELS = {"resnet50": 1024, "efficientnet_lite0": 112}


def trunk(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """(N, 3, 224, 224) -> ((N, REGION_CHANNELS, 14, 14), (N, dim, 7, 7))."""
    if name == "efficientnet_lite0":
        return Lite0Trunk(model).eval()
    return ResNetTrunk(model).eval()
