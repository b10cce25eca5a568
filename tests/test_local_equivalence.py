"""The efficient MLAAN step computes exactly the gradients of the released procedure (spec §3.3).

The reference below is a literal transcription of §3.3 (A) (span 2) and (B) (span 3): two
activation streams, modules re-run on the y and z paths, one backward per local loss. It shares
the method's modules and heads but none of its step code.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from leanvision.methods.local import LocalLearning
from leanvision.models import create_model


def _run(pieces, x):
    for p in pieces:
        x = p(x)
    return x


def reference_step(meth, images, t):
    """§3.3 as released, with the decided defaults (all losses as in the routing table §3.4)."""
    K, s = len(meth.split), meth.span
    image = meth.target_image(images)
    E = [meth.pieces(j) for j in range(K)]
    E[0] = E[0][1:]  # the stem runs once, before E_0 (step 2)
    stem = meth.model.stem(images)
    x, y = stem, stem
    for i in range(K - 1):
        x = _run(E[i], x.detach())
        if i < s - 1:  # the first span-1 iterations only advance x
            continue
        if s == 2:
            y = _run(E[i - 1], y)
            z = _run(E[i], y)
        else:
            y = _run(E[i - 2], y)
            z = _run(E[i], _run(E[i - 1], y))
        z = meth.lams[str(i)](z)
        loss = meth.w_x * meth.indep[str(i)](x, t, image) + meth.w_y * meth.casc[str(i)](z, t, image)
        loss.backward()
        x, y = x.detach(), y.detach()
    _run(E[K - 1], x.detach())  # the x path of the last module: computed, loss discarded (step 5)
    for j in range(max(0, K - s), K):
        y = _run(E[j], y)
    loss = F.cross_entropy(meth.model.head(y), t)
    loss.backward()
    return loss


def _pair(base, span, modules, **kw):
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=5).double()
    meth = LocalLearning(model, modules, base=base, mlaan=True, span=span, image_size=8, **kw).double()
    ref = copy.deepcopy(meth)
    return meth, ref


@pytest.mark.parametrize(
    "base,span,modules,recompute",
    [
        ("dgl", 2, None, False),
        ("dgl", 3, None, False),
        ("dgl", 3, 5, False),
        ("infopro", 2, 4, False),
        ("infopro", 3, None, False),
        ("dgl", 2, 2, False),
        ("dgl", 2, None, True),
        ("infopro", 3, None, True),
    ],
)
def test_efficient_step_matches_released_procedure(base, span, modules, recompute):
    # w_x and w_y of similar size so that both routes show in the gradients.
    meth, ref = _pair(base, span, modules, w_x=0.3, w_y=0.7, recompute=recompute)
    torch.manual_seed(1)
    images = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3, 4, 0])
    out = meth.train_step(images, t, lambda loss: loss.backward())
    ref_loss = reference_step(ref, images, t)
    assert torch.allclose(out["loss"], ref_loss.detach(), atol=1e-10)
    got, want = dict(meth.named_parameters()), dict(ref.named_parameters())
    for name, p in want.items():
        g, w = got[name].grad, p.grad
        if w is None:
            assert g is None or not g.any(), name
            continue
        assert g is not None, f"{name} got no gradient"
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-9, msg=name)
    # BN running statistics move as if modules had been recomputed like the release (§8.11).
    for (name, b), (_, rb) in zip(meth.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(b.double(), rb.double(), rtol=1e-6, atol=1e-9, msg=name)
