"""The paper's two-tower AlexNet as a PyTorch module, for state dicts written by
`alexnet export --format grouped` (the paper and caffe presets).

The towers are folded into grouped convolutions (groups = 2 at conv2, conv4 and
conv5, as Caffe runs them). With lrn="paper" local response normalisation stays
inside each tower (Section 3.3 within 3.2); with lrn="caffe" it spans both towers'
channels and pooling rounds up, as in Caffe's bvlc_alexnet.

    import torch
    from alexnet_pytorch import GroupedAlexNet

    net = GroupedAlexNet.load("paper.pth")                 # --arch paper, 227 input
    net = GroupedAlexNet.load("caffe.pth", lrn="caffe")    # --arch caffe
    # The paper's alternatives (alexnet train --activation tanh --pool-size 2 --no-lrn
    # --towers 1): one tower is read from the shapes, the rest given.
    net = GroupedAlexNet.load("tanh.pth", activation="tanh", pool=(2, 2), lrn="none")
    net.eval()
    logits = net(images)   # float [N, 3, 227, 227], preprocessed as the checkpoint says

    # ONNX: one Split and one LRN node per normalisation, the batch dimension dynamic.
    torch.onnx.export(net, torch.zeros(1, 3, 227, 227), "net.onnx", opset_version=11,
                      input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})

Needs only torch (1.13 or later).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


class _LRN(torch.autograd.Function):
    """nn.LocalResponseNorm, exported to ONNX as one LRN node (PyTorch's own export is
    a Pad/AvgPool chain). The two agree: both divide alpha by the window size."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        return F.local_response_norm(x, size, alpha, beta, k)

    @staticmethod
    def symbolic(g, x, size, alpha, beta, k):
        return g.op("LRN", x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


class GroupedAlexNet(nn.Module):
    # Section 3.3's LRN: n = 5, beta = 0.75. The paper's alpha (1e-4) multiplies the
    # sum of squares over the window; PyTorch's divides alpha by n, so alpha * n here.
    LRN = {"paper": dict(alpha=5e-4, beta=0.75, k=2.0), "caffe": dict(alpha=1e-4, beta=0.75, k=1.0)}

    def __init__(self, num_classes=1000, pool5_size=6, conv1_padding=0, lrn="paper", dropout=0.5,
                 activation="relu", pool=(3, 2), towers=2):
        super().__init__()
        # One tower (Section 3.2's alternative): half the kernels of conv1..conv4, no groups.
        g = 2 if towers == 2 else 1
        w = (96, 256, 384, 384) if towers == 2 else (48, 128, 192, 192)
        self.conv1 = nn.Conv2d(3, w[0], 11, stride=4, padding=conv1_padding)
        self.conv2 = nn.Conv2d(w[0], w[1], 5, padding=2, groups=g)
        self.conv3 = nn.Conv2d(w[1], w[2], 3, padding=1)
        self.conv4 = nn.Conv2d(w[2], w[3], 3, padding=1, groups=g)
        self.conv5 = nn.Conv2d(w[3], 256, 3, padding=1, groups=g)
        self.fc6 = nn.Linear(256 * pool5_size * pool5_size, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)
        self.lrn = None if lrn == "none" else nn.LocalResponseNorm(5, **self.LRN[lrn])
        # Caffe normalises both towers' maps as one blob, as one tower does its own.
        self.across_towers = lrn == "caffe" or towers == 1
        self.ceil_mode = lrn == "caffe"      # and Caffe's pooling rounds up
        self.dropout = dropout
        self.act = torch.tanh if activation == "tanh" else F.relu  # Section 3.1 and Figure 1's alternative
        self.pool_size, self.pool_stride = pool

    @classmethod
    def load(cls, path, **options):
        """The network a grouped state dict describes (classes and pool5 size from its shapes)."""
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only, nothing run
        pool5 = math.isqrt(state["fc6.weight"].shape[1] // 256)
        towers = 1 if state["conv1.weight"].shape[0] == 48 else 2
        net = cls(num_classes=state["fc8.weight"].shape[0], pool5_size=pool5, towers=towers, **options)
        net.load_state_dict(state)
        return net

    def local_response_norm(self, x):
        if torch.onnx.is_in_onnx_export():
            l = self.lrn
            return _LRN.apply(x, l.size, l.alpha, l.beta, l.k)
        return self.lrn(x)

    def norm(self, x, channels):
        if self.lrn is None:
            return x
        if self.across_towers:
            return self.local_response_norm(x)
        # Each tower's maps are normalised alone (Section 3.3 within Section 3.2's split).
        # Split at a constant (not x.chunk), so that ONNX gets one Split node.
        a, b = torch.split(x, [channels // 2, channels // 2], dim=1)
        return torch.cat([self.local_response_norm(a), self.local_response_norm(b)], dim=1)

    def pool(self, x):
        # Overlapping pooling, Section 3.4 (z = 3, s = 2), or the alternative given.
        return F.max_pool2d(x, self.pool_size, self.pool_stride, ceil_mode=self.ceil_mode)

    def features(self, x):
        x = self.pool(self.norm(self.act(self.conv1(x)), self.conv1.out_channels))
        x = self.pool(self.norm(self.act(self.conv2(x)), self.conv2.out_channels))
        x = self.act(self.conv3(x))
        x = self.act(self.conv4(x))
        return torch.flatten(self.pool(self.act(self.conv5(x))), 1)

    def forward(self, x):
        x = self.features(x)
        x = F.dropout(self.act(self.fc6(x)), self.dropout, self.training)
        x = F.dropout(self.act(self.fc7(x)), self.dropout, self.training)
        return self.fc8(x)
