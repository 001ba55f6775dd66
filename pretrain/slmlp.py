"""SL-MLP (Wang et al. 2022, "Revisiting the Transferability of Supervised Pretraining: an MLP Perspective",
§4.1): SL with an MLP projector inserted between the pooled backbone features and the classifier,

    L(x) = CE(W · g(f(x)), y),   g(f) = fc2(ReLU(BN(fc1(f)))),

which keeps more intra-class variation in the backbone's features and so transfers better (§4.2; Table 2:
+7.2 top-1 on the concept generalization task at 100 epochs). As for SL, only the encoder f transfers
(§4.1, Fig. 3); projector and classifier are dropped.

The model is ``Supervised`` with ``encoder.fc`` = Sequential(projector, classifier), so the backbone is the
encoder's state dict without ``fc.``, as for SL.
"""
from collections import OrderedDict

import torch.nn as nn

from .moco import build_resnet_encoder
from .sl import Supervised


def build_projector(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """g = fc2(ReLU(BN(fc1(f)))), "following Byol" (§4.1). fc2 has no bias, as in Byol's own MLP (deepmind
    byol, utils/networks.py) and as the parameter counts of Table 5 say (2048 wide: Input FC alone 4.196M =
    2048·2048 + 2048 bias; FC+ReLU+FC 8.391M, FC+BN+FC and SL-MLP 8.395M: fc1's bias and none for fc2)."""
    return nn.Sequential(OrderedDict([
        ("fc1", nn.Linear(in_dim, hidden_dim)),
        ("bn", nn.BatchNorm1d(hidden_dim)),
        ("relu", nn.ReLU(inplace=True)),
        ("fc2", nn.Linear(hidden_dim, out_dim, bias=False)),
    ]))


def build_slmlp(cfg, num_classes: int) -> Supervised:
    """SL-MLP: a torchvision ``cfg.MODEL.ARCH`` (random init) whose ``fc`` is the projector (backbone width ->
    MODEL.SLMLP.HIDDEN_DIM -> MODEL.SLMLP.OUT_DIM, §4.1: 2048 -> 4096 -> 256 for ResNet-50) and then SL's
    classifier W, Linear(OUT_DIM, num_classes) (Fig. 3: SL-MLP only adds the MLP before SL's classifier)."""
    encoder = build_resnet_encoder(cfg.MODEL.ARCH, num_classes)
    projector = build_projector(encoder.fc.in_features, cfg.MODEL.SLMLP.HIDDEN_DIM, cfg.MODEL.SLMLP.OUT_DIM)
    encoder.fc = nn.Sequential(OrderedDict([
        ("projector", projector),
        ("classifier", nn.Linear(cfg.MODEL.SLMLP.OUT_DIM, num_classes)),
    ]))
    return Supervised(encoder)
