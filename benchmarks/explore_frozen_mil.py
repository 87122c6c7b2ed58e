"""Exploration behind the README's "What learns" rows: frozen ImageNet EfficientNet-Lite0 features at
native resolution + a small trainable MIL head, swept quickly in plain torch (no Lightning, no checkpoints).

    python benchmarks/explore_frozen_mil.py DATA SIZE LAYER POOLS [bf16] [hN] [kF] [eN]

DATA is a synthetic dataset (`xraylens data synth`, it needs boxes.csv), SIZE the letterbox side,
LAYER where the backbone is cut (b4 = blocks.4, stride 16, what mil_efficientnet_lite0 uses; b5, b6 or
head for stride 32; a list like b2+b4 stacks each block's map, average-pooled to the last one's grid), POOLS a comma list of topk,lse,max,avg,attn (gated attention MIL, Ilse et al.
2018). Options: bf16 (extract the training features under bf16 autocast, evaluate on fp32 ones), hN
(hidden width, default 128), kF (top-k fraction, default 0.02), eN (epochs, default 30), boxF (box fraction:
the balanced box loss of `train.box_fraction` on that share of training images, default 0), dF (head dropout,
default 0.1; the package's demo_cpu uses 0.2), sN (seed), claheF (data.clahe_clip: CLAHE before the
features, stored in their own file), parts (the package's per-body-part class weights
instead of one pos_weight), iflip (a coin per image for the flip, as the package's FeatureSet; default one
per batch), pinit (the package's init of the last instance conv), tta (evaluate on the mean logit of the
map and its mirror), ctx (a 3x3 first conv in the instance classifier: each cell sees its
neighbours), std (features standardised per channel on the training images), maxstack (finer stacked maps
max-pooled onto the last one's grid instead of averaged: a thin line keeps its peak), ctxdw (a depthwise 3x3 over the hidden
units after the 1x1: context from the neighbours at a fraction of ctx's cost), os8 (the same weights with the stride-16 stages dilated instead: a stride-8 grid,
64 x 64 at 512 px; features stored in their own file). Features are
stored in ./feats_*.pt and reused. Prints one JSON line per pooling: image AUROC on train and on the
patient-grouped validation split, and study AUROC on the `valid` split overall and per finding kind
(that kind's abnormal studies against all normal ones). The package's own recipe is the same head
(xraylens.models.mil) trained by `xraylens train --config demo_cpu`.
"""
import json
import re
import sys
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from xraylens.data.contrast import local_contrast
from xraylens.data.images import read_image
from xraylens.data.mura import index_dataset
from xraylens.data.preprocess import letterbox
from xraylens.data.splits import split_train_val
from xraylens.models.timm_nets import timm_backbone

torch.set_num_threads(2)
root, size, layer = sys.argv[1], int(sys.argv[2]), sys.argv[3]
OPTIONS = sys.argv[5:]


def number(prefix, default, cast):
    """An option written as PREFIX followed by a number (s1, k0.01, box0.25): a word like std is not s."""
    found = [m.group(1) for a in OPTIONS if (m := re.fullmatch(rf"{prefix}(\d+(?:\.\d*)?(?:e-?\d+)?)", a))]
    return cast(found[0]) if found else default


BF16 = "bf16" in OPTIONS
HIDDEN = number("h", 128, int)
FRAC = number("k", 0.02, float)
EPOCHS = number("e", 30, int)
BOX_FRACTION = number("box", 0.0, float)
DROPOUT = number("d", 0.1, float)
SEED = number("s", 0, int)
PART_WEIGHTS = "parts" in OPTIONS  # the package's per-body-part class weights instead of one pos_weight
CLAHE = number("clahe", 0.0, float)  # data.clahe_clip
IMAGE_FLIPS = "iflip" in OPTIONS  # flip each image's map by its own coin, as FeatureSet does (default: per batch)
PACKAGE_INIT = "pinit" in OPTIONS  # the package's instance classifier init (last conv std 0.01, bias 0)
FLIP_TTA = "tta" in OPTIONS  # evaluate on the mean logit of the map and its mirror
OUTPUT_STRIDE = 8 if "os8" in OPTIONS else 32  # blocks.3 on dilated instead of strided: a stride-8 grid
CONTEXT = "ctx" in OPTIONS  # the instance classifier's first conv 3x3 instead of 1x1: each cell sees its neighbours
DW_CONTEXT = "ctxdw" in OPTIONS  # a depthwise 3x3 on the hidden units after the 1x1: neighbours, ~1/200 the cost of ctx
STANDARDISE = "std" in OPTIONS  # features scaled per channel by the training images' mean and std
MAX_STACK = "maxstack" in OPTIONS  # finer stacked maps max-pooled onto the grid, not averaged
tag = (f"{root.strip('/').split('/')[-1]}_{size}_{layer}{'_os8' if OUTPUT_STRIDE == 8 else ''}"
       f"{'_maxstack' if MAX_STACK else ''}")
feat_file = f"feats_{tag}{f'_clahe{CLAHE:g}' if CLAHE else ''}{'_bf16' if BF16 else ''}.pt"

idx = index_dataset(root, splits=("train", "valid"), progress=False).table
boxes = pd.read_csv(f"{root}/boxes.csv")
kinds_per_study = boxes.assign(study_path=boxes.path.str.rsplit("/", n=1).str[0] + "/").groupby("study_path")["kind"].apply(set)

def build():
    return timm_backbone("tf_efficientnet_lite0", pretrained=True, output_stride=OUTPUT_STRIDE).eval()  # packaged weights, checksum verified

def trunk(m, x):
    """The map at LAYER; for a list like b2+b4, every named block's map average-pooled to the last one's grid
    and stacked along channels (shallower, finer features beside the deeper ones)."""
    names = layer.split("+")
    wanted = {int(n[1:]) for n in names if n.startswith("b")}
    last = 6 if "head" in names else max(wanted)
    x = m.bn1(m.conv_stem(x))
    taken = []
    for i in range(last + 1):
        x = m.blocks[i](x)
        if i in wanted:
            taken.append(x)
    if "head" in names:
        taken.append(m.bn2(m.conv_head(x)))
    grid = taken[-1].shape[-1]
    pool = F.adaptive_max_pool2d if MAX_STACK else F.adaptive_avg_pool2d
    return torch.cat([pool(t, grid) if t.shape[-1] != grid else t for t in taken], 1)


class Trunk(nn.Module):
    """:func:`trunk` as a module, so float32 features can run in ONNX Runtime (the package's feature engine)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return trunk(self.m, x)


try:
    feats = torch.load(feat_file)
except FileNotFoundError:
    from xraylens.onnx_cpu import close, resolve_engine
    from xraylens.onnx_cpu import runner as make_runner

    m = build().to(memory_format=torch.channels_last)
    out = []
    t0 = time.time()
    files = idx["file"].tolist()
    # float32 features in ONNX Runtime where it is installed (the package's train.feature_engine=auto), else torch
    wanted = resolve_engine("auto", "bf16" if BF16 else "32", "cpu", images=len(files))
    forward, engine = make_runner(Trunk(m), (3, size, size), wanted, desc="sweep trunk")
    with torch.inference_mode():
        for i in range(0, len(files), 16):
            sq = [local_contrast(letterbox(read_image(f), size)[0], CLAHE) for f in files[i:i+16]]
            x = torch.from_numpy(np.stack(sq))[:, None].expand(-1, 3, -1, -1)
            x = ((x - 0.5) / 0.5).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=BF16):
                out.append(forward(x).half())
    close(forward)
    feats = torch.cat(out)
    print(f"extracted {feats.shape} in {time.time()-t0:.0f}s ({engine})", flush=True)
    torch.save(feats, feat_file)

table = split_train_val(idx[idx.split == "train"], 0.15, 0)
idx = idx.reset_index(drop=True)
sub = pd.Series("test", index=idx.index)
sub[idx.split == "train"] = table["subset"].to_numpy()
labels = torch.tensor(idx["label"].to_numpy(), dtype=torch.float32)
tr, va, te = [np.flatnonzero(sub.to_numpy() == s) for s in ("train", "val", "test")]
C = feats.shape[1]
if STANDARDISE:
    sample = feats[torch.from_numpy(tr[:: max(1, len(tr) // 512)])].float()
    mean, std = sample.mean((0, 2, 3), keepdim=True), sample.std((0, 2, 3), keepdim=True).clamp(min=1e-3)
    feats = ((feats.float() - mean) / std).half()


def box_masks(rows):
    """(N, H*W) float grid masks of the ground-truth boxes, on the feature grid after the letterbox."""
    from PIL import Image
    grid = feats.shape[-1]
    masks = torch.zeros(len(rows), grid, grid)
    by_path = {p: g for p, g in boxes.groupby("path")}
    for n, i in enumerate(rows):
        group = by_path.get(idx.at[i, "path"])
        if group is None:
            continue
        w, h = Image.open(idx.at[i, "file"]).size
        scale = size / max(h, w)
        top, left = (size - round(h * scale)) // 2, (size - round(w * scale)) // 2
        cell = size / grid
        for b in group.itertuples():
            c0, c1 = int((b.x0 * scale + left) // cell), int((b.x1 * scale + left) // cell)
            r0, r1 = int((b.y0 * scale + top) // cell), int((b.y1 * scale + top) // cell)
            masks[n, max(r0, 0):min(r1, grid - 1) + 1, max(c0, 0):min(c1, grid - 1) + 1] = 1.0
    return masks.flatten(1)


boxed = np.random.default_rng(0).permutation(tr)[: int(round(BOX_FRACTION * len(tr)))]
box_row = {int(i): n for n, i in enumerate(boxed)}
masks = box_masks(boxed) if len(boxed) else torch.zeros(0)

class Head(nn.Module):
    def __init__(self, pool, hidden=128, k=0.02):
        super().__init__()
        first = nn.Conv2d(C, hidden, 3, padding=1) if CONTEXT else nn.Conv2d(C, hidden, 1)
        context = [nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.ReLU()] if DW_CONTEXT else []
        self.inst = nn.Sequential(first, nn.ReLU(), *context, nn.Dropout2d(DROPOUT), nn.Conv2d(hidden, 1, 1))
        if PACKAGE_INIT:
            nn.init.normal_(self.inst[-1].weight, std=0.01)
            nn.init.zeros_(self.inst[-1].bias)
        self.pool, self.k = pool, k
        if pool == "attn":
            self.V = nn.Conv2d(C, hidden, 1)
            self.U = nn.Conv2d(C, hidden, 1)
            self.w = nn.Conv2d(hidden, 1, 1)
    def forward(self, f):
        s = self.inst(f).flatten(1)  # (B, HW)
        if self.pool == "lse":
            r = 5.0
            return (torch.logsumexp(r * s, 1) - np.log(s.shape[1])) / r
        if self.pool == "topk":
            k = max(1, int(self.k * s.shape[1]))
            return s.topk(k, dim=1).values.mean(1)
        if self.pool == "max":
            return s.amax(1)
        if self.pool == "avg":
            return s.mean(1)
        a = self.w(torch.tanh(self.V(f)) * torch.sigmoid(self.U(f))).flatten(1).softmax(1)
        return (a * s).sum(1)

def run(pool, epochs=EPOCHS, lr=1e-3, wd=1e-4, hidden=HIDDEN, flip=True, seed=SEED):
    torch.manual_seed(seed)
    h = Head(pool, hidden, FRAC)
    opt = torch.optim.AdamW(h.parameters(), lr=lr, weight_decay=wd)
    steps = epochs * int(np.ceil(len(tr) / 32))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    pos = labels[tr].mean()
    if PART_WEIGHTS:
        from xraylens.datamodule import loss_weights
        table = loss_weights(idx.iloc[tr])
        image_weights = torch.tensor([table[p][int(y)] for p, y in zip(idx["body_part"], labels.long().tolist(), strict=True)])
    t0 = time.time()
    for ep in range(epochs):
        h.train()
        perm = np.random.default_rng(seed + ep).permutation(tr)
        tot = 0
        for i in range(0, len(perm), 32):
            b = perm[i:i+32]
            f = feats[b].float()
            if flip and IMAGE_FLIPS:
                mirrored = torch.rand(len(b)) < 0.5
                f[mirrored] = f[mirrored].flip(-1)
                flip_now = mirrored.numpy()
            else:
                flip_now = np.full(len(b), flip and np.random.rand() < 0.5)
                if flip_now[0]:
                    f = f.flip(-1)
            if PART_WEIGHTS:
                loss = (F.binary_cross_entropy_with_logits(h(f), labels[b], reduction="none") * image_weights[b]).mean()
            else:
                loss = F.binary_cross_entropy_with_logits(h(f), labels[b], pos_weight=(1 - pos) / pos)
            sup = [j for j, i in enumerate(b) if int(i) in box_row]
            if sup:  # Li et al. 2018: in- and out-of-box cells of the boxed images, balanced
                target = masks[[box_row[int(b[j])] for j in sup]]
                grid = target.view(len(sup), feats.shape[-2], -1)
                mirrored = torch.from_numpy(flip_now[sup])
                grid[mirrored] = grid[mirrored].flip(-1)
                target = grid.flatten(1)
                cells = h.inst(f[sup]).flatten(1)
                per_cell = F.binary_cross_entropy_with_logits(cells, target, reduction="none")
                inside = (per_cell * target).sum() / target.sum().clamp(min=1)
                outside = (per_cell * (1 - target)).sum() / (1 - target).sum().clamp(min=1)
                loss = loss + (inside + outside) * len(sup) / len(b)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(b)
    h.eval()
    fp32_file = feat_file.replace("_bf16", "")
    try:  # evaluate on fp32 features when they exist (as the package does), else on the bf16 ones
        evalf = torch.load(fp32_file) if BF16 else feats
        if BF16 and STANDARDISE:
            evalf = ((evalf.float() - mean) / std).half()
    except FileNotFoundError:
        evalf = feats
    with torch.no_grad():
        def logit(f):
            return (h(f) + h(f.flip(-1))) / 2 if FLIP_TTA else h(f)
        p = torch.cat([torch.sigmoid(logit(evalf[i:i+64].float())) for i in range(0, len(idx), 64)]).numpy()
    res = {"pool": pool, "clahe": CLAHE, "dropout": DROPOUT, "seed": seed, "part_weights": PART_WEIGHTS, "image_flips": IMAGE_FLIPS, "package_init": PACKAGE_INIT, "tta": FLIP_TTA, "layer": layer, "context": "dw3x3" if DW_CONTEXT else CONTEXT, "standardise": STANDARDISE, "max_stack": MAX_STACK, "output_stride": OUTPUT_STRIDE, "box_fraction": BOX_FRACTION, "bf16": BF16, "hidden": hidden, "k": FRAC, "epochs": epochs, "train_loss": round(tot / len(tr), 3), "secs": round(time.time() - t0)}
    for name, rows in (("train", tr), ("val", va)):
        res[f"{name}_img_auc"] = round(roc_auc_score(labels[rows], p[rows]), 3)
    t = idx.iloc[te].assign(p=p[te]).groupby("study_path").agg(p=("p", "mean"), label=("label", "first"))
    res["test_study_auc"] = round(roc_auc_score(t.label, t.p), 3)
    # pointing on the cached grid: the hottest cell of an abnormal test image touches one of its boxes
    boxed_test = [i for i in te if labels[i] == 1 and idx.at[i, "path"] in set(boxes["path"])]
    if boxed_test:
        with torch.no_grad():
            cells = torch.cat([h.inst(evalf[boxed_test[j:j + 64]].float()).flatten(1)
                               for j in range(0, len(boxed_test), 64)])
        hit = box_masks(boxed_test).gather(1, cells.argmax(1, keepdim=True))[:, 0]
        res["pointing"] = round(float(hit.mean()), 3)
        kinds_of = boxes.groupby("path")["kind"].agg(frozenset)  # per kind: films with that kind alone (explain-eval's)
        for kind in ("fracture", "hardware", "lesion"):
            sel = np.array([kinds_of[idx.at[i, "path"]] == {kind} for i in boxed_test])
            if sel.any():
                res[f"pointing_{kind}"] = round(float(hit[torch.from_numpy(sel)].mean()), 3)
    for kind in ("fracture", "hardware", "lesion"):
        has = np.array([kind in kinds_per_study.get(s, set()) for s in t.index])
        sel = (t.label == 0) | has
        if has.sum():
            res[kind] = round(roc_auc_score(t.label[sel], t.p[sel]), 3)
    print(json.dumps(res), flush=True)

for pool in sys.argv[4].split(","):
    run(pool)
