"""The paper's two-tower AlexNet as a PyTorch module, for state dicts written by
`alexnet export --format grouped` (the paper and caffe presets).

The towers are folded into grouped convolutions (groups = 2 at conv2, conv4 and
conv5, as Caffe runs them); local response normalisation stays inside each tower.

    import torch
    from alexnet_pytorch import GroupedAlexNet

    net = GroupedAlexNet.load("paper.pth")                 # --arch paper, 227 input
    net = GroupedAlexNet.load("caffe.pth", lrn="caffe")    # --arch caffe
    net.eval()
    logits = net(images)   # float [N, 3, 227, 227], preprocessed as the checkpoint says

Needs only torch (1.13 or later).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


class GroupedAlexNet(nn.Module):
    # Section 3.3's LRN: n = 5, beta = 0.75. The paper's alpha (1e-4) multiplies the
    # sum of squares over the window; PyTorch's divides alpha by n, so alpha * n here.
    LRN = {"paper": dict(alpha=5e-4, beta=0.75, k=2.0), "caffe": dict(alpha=1e-4, beta=0.75, k=1.0)}

    def __init__(self, num_classes=1000, pool5_size=6, conv1_padding=0, lrn="paper", dropout=0.5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 11, stride=4, padding=conv1_padding)
        self.conv2 = nn.Conv2d(96, 256, 5, padding=2, groups=2)
        self.conv3 = nn.Conv2d(256, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 384, 3, padding=1, groups=2)
        self.conv5 = nn.Conv2d(384, 256, 3, padding=1, groups=2)
        self.fc6 = nn.Linear(256 * pool5_size * pool5_size, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)
        self.lrn = nn.LocalResponseNorm(5, **self.LRN[lrn])
        self.dropout = dropout

    @classmethod
    def load(cls, path, **options):
        """The network a grouped state dict describes (classes and pool5 size from its shapes)."""
        state = torch.load(path, map_location="cpu")
        pool5 = math.isqrt(state["fc6.weight"].shape[1] // 256)
        net = cls(num_classes=state["fc8.weight"].shape[0], pool5_size=pool5, **options)
        net.load_state_dict(state)
        return net

    def norm(self, x):
        # Each tower's maps are normalised alone (Section 3.3 within Section 3.2's split).
        a, b = x.chunk(2, dim=1)
        return torch.cat([self.lrn(a), self.lrn(b)], dim=1)

    def features(self, x):
        x = F.max_pool2d(self.norm(F.relu(self.conv1(x))), 3, 2)  # overlapping pooling, Section 3.4
        x = F.max_pool2d(self.norm(F.relu(self.conv2(x))), 3, 2)
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        return torch.flatten(F.max_pool2d(F.relu(self.conv5(x)), 3, 2), 1)

    def forward(self, x):
        x = self.features(x)
        x = F.dropout(F.relu(self.fc6(x)), self.dropout, self.training)
        x = F.dropout(F.relu(self.fc7(x)), self.dropout, self.training)
        return self.fc8(x)
