"""What the local-learning steps are checked against, exactly.

1. ``release_*_step`` below: our transcription of the training procedure of the authors' released
   CIFAR code (github.com/Wendy231015/MLAAN at commit 70effbe; files named below), followed by
   ``train.py``'s ``optimizer.step()``. It is *not* the authors' code, which is not vendored here
   (no licence is given); it is written in this file, step by step in the release's order, with
   comments naming the release's files and steps. It runs on copies of our backbone blocks and heads (same
   layers; the release draws its heads at random, so their weights are copied) and builds its own
   module list and LAM block lists from the release's config tables for ResNet-32 K=8, copied below.
   The tests show that ``preset="release"`` reproduces it in float64 (parameters, BN statistics and
   EMA copies after two full steps, so that EMA copies moved by the first step are read by the
   second) and that our defaults compute something else.
2. ``reference_step``: a transcription of spec §3.3 for any option values (span 2 or 3, any
   EMA rule), sharing the method's modules. The efficient step (each module run forward once,
   gradients routed explicitly, optional recompute) must give its gradients and BN statistics.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from leanvision.classify.train import build_optimizer
from leanvision.methods.local import LocalLearning
from leanvision.models import create_model

# config2.py, InfoPro['resnet32'][8]: the last block (stage, index) of each module; the stem runs
# before module 0 (resnetMLAAN.py / resnetInfoProbin.py). configs.py (the baselines) has the same cuts.
CONFIG2_R32_K8 = [(1, 0), (1, 2), (1, 4), (2, 1), (2, 3), (3, 0), (3, 2), (3, 4)]
# configAuxPlus_new.py, InfoPro_Aux['resnet32'][8]: the backbone blocks copied into module i's LAM
# (its 8th entry is padding that no loss uses).
AUX_R32_K8 = [
    [(2, 0), (3, 0), (3, 2), (3, 4)],
    [(2, 0), (3, 0), (3, 2), (3, 4)],
    [(2, 0), (3, 0), (3, 3), (3, 4)],
    [(3, 0), (3, 2), (3, 3), (3, 4)],
    [(3, 0), (3, 2), (3, 3), (3, 4)],
    [(3, 2), (3, 3), (3, 4)],
    [(3, 3), (3, 4)],
]
K = 8
CIFAR_MEAN = [125.3 / 255, 123.0 / 255, 113.9 / 255]
CIFAR_STD = [63.0 / 255, 62.1 / 255, 66.7 / 255]
LR, WEIGHT_DECAY = 0.8, 1e-4  # train.py: SGD(lr 0.8, momentum 0.9, nesterov, weight decay 1e-4)


def _block(stage_index) -> int:
    stage, index = stage_index
    return (stage - 1) * 5 + index  # ResNet-32: 5 blocks per stage


def _run(blocks, x):
    for b in blocks:
        x = b(x)
    return x


class ReleaseNet:
    """The release's structures, built the way its constructor builds them, on copies of ``meth``'s
    modules: ``encoder`` (Encoder_Net: module j's blocks, stem excluded), ``aug``/``ema`` (Aug_Net,
    EMA_Net: the LAM copies), ``update`` (Update_Net: the backbone blocks each EMA tracks), heads.
    ``meth`` must have been built right after its model, so its LAM copies equal the backbone's."""

    def __init__(self, meth, ema_frozen: bool = True):
        self.m = copy.deepcopy(meth)  # every tensor the release step touches lives in self.m
        model = self.m.model
        self.stem, self.fc, blocks = model.stem, model.head, model.blocks
        ends = [_block(e) for e in CONFIG2_R32_K8]
        self.encoder = [list(blocks[a + 1 : b + 1]) for a, b in zip([-1, *ends], ends)]
        self.update = {i: [blocks[_block(b)] for b in chain] for i, chain in enumerate(AUX_R32_K8)}
        if meth.mlaan:
            self.aug, self.ema = {}, {}
            for name, lam in self.m.lams.items():
                i = int(name)
                # The method must have copied the release's LAM blocks (configAuxPlus_new.py) ...
                assert lam.sources == [_block(b) for b in AUX_R32_K8[i]], i
                # ... and the copies still equal the backbone (the release copies after its init).
                for a, b in zip(lam.aug, self.update[i]):
                    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
                # EMA_Net[i] holds copies of every LAM block, but the forward reads only the first;
                # the method builds only that one (§8.15), so only that one is compared.
                self.aug[i], self.ema[i] = list(lam.aug), list(lam.ema)
                # resnetMLAAN.py sets requires_grad = False on EMA_Net; resnetInfoProbin.py does not.
                for p in lam.ema.parameters():
                    p.requires_grad_(not ema_frozen)
            self.indep = {int(i): loss for i, loss in self.m.indep.items()}
            self.casc = {int(i): loss for i, loss in self.m.casc.items()}

        # train.py: one SGD over model.parameters(), built once (parameters without a gradient are skipped).
        self.opt = torch.optim.SGD(self.m.parameters(), lr=LR, momentum=0.9, nesterov=True, weight_decay=WEIGHT_DECAY)


def _release_lam(net, i, z):
    """resnetMLAAN.py forward: z = Aug_Net[i][0](z) + EMA_Net[i][0](z), then Aug_Net[i][j](z)."""
    for j, block in enumerate(net.aug[i]):
        z = block(z) + net.ema[i][0](z) if j == 0 else block(z)
    return z


def _gap_linear_ce(head, h, t):
    """auxMLAAN.AuxClassifier: AdaptiveAvgPool2d(1) -> view -> Linear -> CrossEntropyLoss."""
    linear = head[-1]
    return F.cross_entropy(linear(F.adaptive_avg_pool2d(h, 1).flatten(1)), t)


def _supcon(features, labels, temperature=0.07, base_temperature=0.07):
    """losses.SupConLoss with one view, contrast_mode 'all' (InfoPro's, from Tian's SupContrast)."""
    logits = features @ features.t() / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()  # "for numerical stability"
    n = len(labels)
    mask = (labels[:, None] == labels[None, :]).float()
    logits_mask = 1 - torch.eye(n, dtype=mask.dtype)
    mask = mask * logits_mask
    log_prob = logits - torch.log((torch.exp(logits) * logits_mask).sum(1, keepdim=True))
    mask_sum = mask.sum(1)
    mask_sum[mask_sum == 0] += 1
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask_sum
    return (-(temperature / base_temperature) * mean_log_prob_pos).mean()


def _aux_classifier(head, mode, h, t):
    """auxiliary_nets.AuxClassifier.forward: the 1c2f head, then SupCon on the L2-normalised
    projection ("contrast") or CrossEntropyLoss ("cross_entropy")."""
    features = head(h)
    if mode == "contrast":
        return _supcon(F.normalize(features, dim=1), t)
    return F.cross_entropy(features, t)


def _decoder(decoder, h, image):
    """auxiliary_nets.Decoder.forward: bilinear (align_corners) upsample to the image size, conv ->
    BN -> ReLU -> conv -> Sigmoid, then BCELoss against the restored image."""
    h = F.interpolate(h, size=list(image.shape[-2:]), mode="bilinear", align_corners=True)
    return F.binary_cross_entropy(torch.sigmoid(decoder.body(h)), image)


def _image_restore(img):
    """_image_restore: img * std + mean with the float32 CIFAR masks the release builds."""
    return img * torch.tensor(CIFAR_STD).view(1, 3, 1, 1) + torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)


def _ema_last(net, m):
    """End of the release's forward: momentum update of the last EMA net from the (pre-step)
    backbone blocks of Update_Net[-1] (the release also updates the EMA copies of the later LAM
    blocks, which no forward reads and the method does not build)."""
    last = K - 2
    for p_src, p_ema in zip(net.update[last][0].parameters(), net.ema[last][0].parameters()):
        p_ema.data = p_ema.data * m + p_src.data * (1 - m)


def release_dgl_mlaan_step(net, img, t, m=0.995, wx=0.001, wy=0.999):
    """resnetMLAAN.py, InfoProResNet.forward, training branch, local_module_num = K > 1 (it runs
    every backward and the EMA update; train.py then calls optimizer.step())."""
    x = net.stem(img)  # conv1 -> bn1 -> relu
    y = torch.clone(x)  # keeps the graph back to the stem
    for i in range(K - 1):
        if i == 0:
            x = _run(net.encoder[0], x).detach()
            continue
        x = _run(net.encoder[i], x)
        y = _run(net.encoder[i - 1], y)
        z = _run(net.encoder[i], y)
        z = _release_lam(net, i, z)
        loss_x = _gap_linear_ce(net.indep[i].head, x, t)  # net_classifier_{stage}_{layer} of module i's end
        loss_y = _gap_linear_ce(net.casc[i].head, z, t)  # aux_classifier_{stage}_{layer}_{i}
        loss = wx * loss_x + wy * loss_y
        loss.backward()
        x, y = x.detach(), y.detach()
    x = _run(net.encoder[-1], x)  # the x path of the last module: its loss is overwritten below
    y = _run(net.encoder[-1], _run(net.encoder[-2], y))
    loss = F.cross_entropy(net.fc(x), t)
    loss = F.cross_entropy(net.fc(y), t)
    loss.backward()
    _ema_last(net, m)
    return loss


def release_infopro_mlaan_step(net, img, t, lambdas=(5, 0.5, 0, 0), m=0.995, wx=0.001, wy=0.999):
    """resnetInfoProbin.py, InfoProResNet.forward, training branch, with the MLAAN run scripts'
    options (--local_loss_mode cross_entropy --ixx_1 5 --ixy_1 0.5 --ixx_2 0 --ixy_2 0); its EMA
    parameters are never frozen, so SGD trains them too."""
    ixx_1, ixy_1, ixx_2, ixy_2 = lambdas
    x = net.stem(img)
    y = torch.clone(x)
    for i in range(K - 1):
        if i in (0, 1):
            x = _run(net.encoder[i], x).detach()
            continue
        x = _run(net.encoder[i], x)
        y = _run(net.encoder[i - 2], y)
        z = _run(net.encoder[i], _run(net.encoder[i - 1], y))
        z = _release_lam(net, i, z)
        local_x = CONFIG2_R32_K8[i][0]  # the *stage* of module i's end (the spec's §3.3 C bug)
        ratio = local_x / (K - 2)
        ixx_r = ixx_1 * (1 - ratio) + ixx_2 * ratio
        ixy_r = ixy_1 * (1 - ratio) + ixy_2 * ratio
        indep, casc = net.indep[i], net.casc[i]
        loss_x1 = _decoder(indep.decoder, x, _image_restore(img))
        loss_x2 = _aux_classifier(indep.classifier, "contrast", x, t)  # x_classifier: default loss mode
        loss_x = ixx_r * loss_x1 + ixy_r * loss_x2
        loss_y1 = _decoder(casc.decoder, z, _image_restore(img))
        loss_y2 = _aux_classifier(casc.classifier, "cross_entropy", z, t)
        loss_y = ixx_r * loss_y1 + ixy_r * loss_y2
        loss = wx * loss_x + wy * loss_y
        loss.backward()
        x, y = x.detach(), y.detach()
    x = _run(net.encoder[-1], x)
    y = _run(net.encoder[-1], _run(net.encoder[-2], _run(net.encoder[-3], y)))
    loss = F.cross_entropy(net.fc(x), t)
    loss = F.cross_entropy(net.fc(y), t)
    loss.backward()
    _ema_last(net, m)
    return loss


def release_baseline_step(net, img, t, infopro=False, lambdas=None):
    """resnetDGL.py / resnetInfoPro.py (InfoPro's resnet.py), InfoProResNet.forward, training
    branch: a local loss after each of modules 0..K-2 (its end block from configs.py), backward at
    once, detach; the final CE."""
    x = net.stem(img)
    for i in range(K - 1):
        x = _run(net.encoder[i], x)
        head = net.m.aux[i]
        if not infopro:
            loss = _aux_classifier(head.head, "cross_entropy", x, t)
        else:
            ixx_1, ixy_1, ixx_2, ixy_2 = lambdas
            ratio = i / (K - 2)  # local_module_i: the module index
            ixx_r, ixy_r = ixx_1 * (1 - ratio) + ixx_2 * ratio, ixy_1 * (1 - ratio) + ixy_2 * ratio
            # The release also computes the terms whose weight is 0 (their gradient is 0); the
            # method builds no network for them.
            loss = 0
            if ixx_r:
                loss = loss + ixx_r * _decoder(head.decoder, x, _image_restore(img))
            if ixy_r:
                loss = loss + ixy_r * _aux_classifier(head.classifier, "contrast", x, t)
        loss.backward()
        x = x.detach()
    x = _run(net.encoder[-1], x)
    loss = F.cross_entropy(net.fc(x), t)
    loss.backward()
    return loss


def _method(name, **options):
    torch.manual_seed(0)
    base, mlaan = name.split("+")[0], name.endswith("+mlaan")
    model = create_model("resnet32").double()
    return LocalLearning(model, K, base=base, mlaan=mlaan, image_size=8, dataset="cifar10", **options).double()


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(8, 3, 8, 8, generator=g, dtype=torch.float64)  # a real image in [0, 1]
    mean, std = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in (CIFAR_MEAN, CIFAR_STD))
    t = torch.tensor([0, 1, 2, 0, 1, 2, 3, 0])[torch.randperm(8, generator=g)]  # one class without a SupCon positive
    return (pixels - mean) / std, t


def _release(name, net, images, t):
    """One iteration of the release's train.py: zero_grad, forward (all backward passes, EMA), step."""
    net.opt.zero_grad()
    if name == "dgl+mlaan":
        loss = release_dgl_mlaan_step(net, images, t)
    elif name == "infopro+mlaan":
        loss = release_infopro_mlaan_step(net, images, t)
    else:
        loss = release_baseline_step(net, images, t, infopro=name == "infopro", lambdas=(5, 0, 0, 2))
    net.opt.step()
    return loss


@pytest.mark.parametrize("name", ["dgl", "infopro", "dgl+mlaan", "infopro+mlaan"])
def test_release_preset_reproduces_release_step(name):
    """preset="release": after two full steps (the second one reads EMA copies that the first one
    moved) every parameter (backbone, LAM and EMA copies, heads) and every BN statistic equals the
    transcription's to float64 rounding (the method sums the same gradient terms in another order)."""
    meth = _method(name, preset="release")
    net = ReleaseNet(meth, ema_frozen=name != "infopro+mlaan")
    opt = build_optimizer(meth, "sgd", LR, WEIGHT_DECAY, 0.9)  # as the trainer builds it
    for seed in (1, 2):
        images, t = _batch(seed)
        opt.zero_grad(set_to_none=True)  # then the trainer's step: passes, EMA, SGD
        out = meth.train_step(images, t, lambda loss: loss.backward())
        meth.before_optimizer_step()
        opt.step()
        ref_loss = _release(name, net, images, t)
        torch.testing.assert_close(out["loss"], ref_loss.detach(), rtol=1e-12, atol=1e-12)
    for (key, a), (_, b) in zip(meth.state_dict().items(), net.m.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13, msg=key)
    assert any(k.startswith("lams.") for k in meth.state_dict()) == ("mlaan" in name)


@pytest.mark.parametrize("name", ["dgl+mlaan", "infopro+mlaan"])
def test_default_computes_another_procedure_than_the_release(name):
    """Our MLAAN defaults (span 3 for DGL; module-index lambdas, one loss mode and a frozen EMA for
    InfoPro) are not the release's procedure: from the same backbone (and for DGL+MLAAN the same
    heads wherever both have one), the backbone's gradients of one step differ far beyond rounding."""
    release = _method(name, preset="release")
    default = _method(name)
    if name == "dgl+mlaan":
        for i in default.indep:
            default.indep[i].load_state_dict(release.indep[i].state_dict())
            default.casc[i].load_state_dict(release.casc[i].state_dict())
    net = ReleaseNet(release, ema_frozen=name != "infopro+mlaan")
    images, t = _batch()
    default.train_step(images, t, lambda loss: loss.backward())
    _release(name, net, images, t)  # its SGD step leaves the gradients in place
    pairs = zip(default.model.blocks.parameters(), net.m.model.blocks.parameters(), strict=True)
    rel = max((a.grad - b.grad).norm() / b.grad.norm() for a, b in pairs if b.grad.norm() > 0)
    assert rel > 0.5, rel


def reference_step(meth, images, t):
    """Spec §3.3 (A) (span 2) and (B) (span 3) for the method's option values, sharing its modules
    and heads (not its step code): two activation streams, modules re-run on the y and z paths, one
    backward per local loss; no EMA and no optimizer step (the gradients are compared)."""
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
def test_efficient_step_matches_spec_procedure(base, span, modules, recompute):
    # w_x and w_y of similar size so that both routes show in the gradients.
    meth, ref = _pair(base, span, modules, w_x=0.3, w_y=0.7, recompute=recompute, lambdas=(5, 0, 0.5, 1))
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
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12, msg=name)
    # BN running statistics move as if modules had been recomputed like the release (§8.11).
    for (name, b), (_, rb) in zip(meth.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(b.double(), rb.double(), rtol=1e-9, atol=1e-12, msg=name)
