"""Face crops on the device: 5-point similarity alignment to the ArcFace template, or square box crops with margin.

Landmark and box coordinates are frame pixels with pixel centres at integers (OpenCV's convention, as
InsightFace's `cv2.warpAffine` alignment and MTCNN's outputs use). Crops come back as float [K,3,S,S] in the
input's value range (0..255 for uint8 frames); faces without landmarks / boxes (NaN) give zeros.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

# InsightFace/ArcFace 112x112 template: left eye, right eye, nose tip, left and right mouth corners (x, y)
ARCFACE_112 = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041))


def template(size: int = 112, device: torch.device | str | None = None) -> torch.Tensor:
    """The 5-point ArcFace template [5,2] scaled from 112x112 to size x size."""
    return torch.tensor(ARCFACE_112, dtype=torch.float32, device=device) * (size / 112.0)


def similarity_transform(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (scale, rotation, translation; no reflection) taking src [N,P,2] onto dst [(N,)P,2].

    Umeyama's estimate in closed form for 2-D (x' = a x - b y + tx, y' = b x + a y + ty), batched without SVD;
    returns the forward matrices [N,2,3].
    """
    src = src.to(torch.float64)
    dst = dst.to(src).expand_as(src)
    ms, md = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    xs, xd = src - ms, dst - md
    var = (xs**2).sum((1, 2))
    a = (xs * xd).sum((1, 2)) / var
    b = (xs[..., 0] * xd[..., 1] - xs[..., 1] * xd[..., 0]).sum(1) / var
    rot = torch.stack([torch.stack([a, -b], 1), torch.stack([b, a], 1)], 1)
    t = md[:, 0] - (rot @ ms[:, 0, :, None])[..., 0]
    return torch.cat([rot, t[..., None]], 2).to(torch.float32)


def _homogeneous(m: torch.Tensor) -> torch.Tensor:
    row = torch.tensor([0.0, 0.0, 1.0], dtype=m.dtype, device=m.device).expand(len(m), 1, 3)
    return torch.cat([m, row], 1)


def supersampling(matrices: torch.Tensor) -> torch.Tensor:
    """Per warp [K,2,3]: ceil(1 / scale), at most 4 (1 where the face is not shrunk): the samples per output pixel
    side that keep a shrunk face from aliasing. Each warp's own, so a crop never depends on its batch-mates."""
    scale = torch.linalg.det(matrices.to(torch.float64)[:, :, :2]).abs().sqrt()
    k = torch.ceil(1.0 / scale.clamp(min=1e-12) - 1e-6).clamp(1, 4)
    return torch.where(scale > 0, k, torch.ones_like(k)).to(torch.int64)


def _nchw(frames: torch.Tensor) -> torch.Tensor:
    if frames.ndim != 4 or 3 not in (frames.shape[1], frames.shape[-1]):
        raise ValueError(f"face_align: expected frames [N,H,W,3] or [N,3,H,W], got {tuple(frames.shape)}")
    return frames.permute(0, 3, 1, 2) if frames.shape[-1] == 3 and frames.shape[1] != 3 else frames


def _fma(a: torch.Tensor, b: torch.Tensor | float, c: torch.Tensor | float) -> torch.Tensor:
    """float32 a * b + c rounded once (a float32 product is exact in float64), as the fused multiply-add of
    PyTorch's vectorised CPU grid_sample."""
    b = b.double() if isinstance(b, torch.Tensor) else b
    c = c.double() if isinstance(c, torch.Tensor) else c
    return (a.double() * b + c).float()


def bilinear_sample(frames: torch.Tensor, frame_index: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """`F.grid_sample(frames[frame_index].float(), grid, "bilinear", "zeros", align_corners=False)` read straight from
    the frames (uint8 or float, [N,3,H,W] or [N,H,W,3]): only the 4 neighbours of each sample become float, so no
    whole-frame float copy exists. Same arithmetic as PyTorch's vectorised CPU kernel (fused multiply-adds in the
    unnormalisation and the weighted sum): bit-identical there, equal to float rounding elsewhere. -> [K,C,h,w]."""
    x = _nchw(frames)
    _, c, h, w = x.shape
    ix = _fma(grid[..., 0] + 1, w / 2, -0.5)
    iy = _fma(grid[..., 1] + 1, h / 2, -0.5)
    x_w, y_n = ix.floor(), iy.floor()
    we, n = ix - x_w, iy - y_n
    e, s = 1 - we, 1 - n
    xi, yi = x_w.long(), y_n.long()
    k = frame_index.to(x.device).long()[:, None, None]
    out = None
    for dy, dx, weight in ((0, 0, s * e), (0, 1, s * we), (1, 0, n * e), (1, 1, n * we)):
        yy, xx = yi + dy, xi + dx
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        v = x[k, :, yy.clamp(0, h - 1), xx.clamp(0, w - 1)].float() * inside[..., None]  # [K,h,w,C]
        v = v.permute(0, 3, 1, 2)
        wt = weight[:, None]
        out = v * wt if out is None else _fma(v, wt, out)
    return out


def warp_affine(frames: torch.Tensor, matrices: torch.Tensor, size: int, frame_index: torch.Tensor | None = None,
                supersample: int | None = None) -> torch.Tensor:
    """cv2.warpAffine(frame, M, (size, size)) for a batch: bilinear, zeros outside, on the frames' device.

    `matrices` [K,2,3] map frame pixels to output pixels; `frame_index` [K] picks each warp's frame (default: one
    per frame). `supersample` k samples k x k points per output pixel and averages them, against aliasing when a
    face is shrunk; None picks each warp's own (`supersampling`: ceil(1 / scale), at most 4), so a face's crop
    does not depend on the other faces of the batch. Only the sampled pixels become float (`bilinear_sample`).
    """
    x = _nchw(frames)
    idx = torch.arange(len(x), device=x.device) if frame_index is None else frame_index.to(x.device)
    if len(matrices) != len(idx):
        raise ValueError(f"face_align: {len(matrices)} matrices for {len(idx)} frames")
    k = len(idx)
    if k == 0:
        return torch.zeros(0, x.shape[1], size, size, device=x.device)
    if supersample is None:
        ks = supersampling(matrices)
        levels = ks.unique().tolist()
        if len(levels) > 1:
            out = torch.empty(k, x.shape[1], size, size, device=x.device)
            for level in levels:
                sel = (ks == level).nonzero().flatten()
                out[sel] = warp_affine(x, matrices[sel.to(matrices.device)], size, idx[sel.to(idx.device)],
                                       supersample=int(level))
            return out
        supersample = int(levels[0])
    m = matrices.to(x.device, torch.float64)
    out = size * supersample
    h, w = x.shape[-2:]
    # output normalised -> output pixels (of the size x size crop) -> frame pixels -> frame normalised
    to_pix = torch.tensor([[size / 2.0, 0, size / 2.0 - 0.5], [0, size / 2.0, size / 2.0 - 0.5], [0, 0, 1]],
                          dtype=torch.float64, device=x.device)
    to_norm = torch.tensor([[2.0 / w, 0, 1.0 / w - 1], [0, 2.0 / h, 1.0 / h - 1], [0, 0, 1]],
                           dtype=torch.float64, device=x.device)
    theta = to_norm @ torch.linalg.inv(_homogeneous(m)) @ to_pix
    grid = F.affine_grid(theta[:, :2].to(torch.float32), [k, x.shape[1], out, out], align_corners=False)
    crops = bilinear_sample(x, idx, grid)
    return F.avg_pool2d(crops, supersample) if supersample > 1 else crops


def align_faces(frames: torch.Tensor, landmarks: torch.Tensor, size: int = 112,
                frame_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops [K,3,S,S] with the 5 landmarks [K,5,2] moved onto the template, and the matrices [K,2,3] used.

    Faces whose landmarks hold NaN (no detection) give zero crops and NaN matrices.
    """
    ok = torch.isfinite(landmarks).all(2).all(1)
    dst = template(size, landmarks.device)
    src = torch.where(ok[:, None, None], landmarks.float(), dst)
    m = similarity_transform(src, dst)
    crops = warp_affine(frames, m, size, frame_index)
    crops = crops * ok.to(crops)[:, None, None, None]
    return crops, torch.where(ok[:, None, None], m, torch.full_like(m, float("nan")))


def box_crops(frames: torch.Tensor, boxes: torch.Tensor, size: int = 224, margin: float = 0.25,
              frame_index: torch.Tensor | None = None) -> torch.Tensor:
    """Square crops [K,3,S,S] centred on boxes [K,4] (x1,y1,x2,y2), side max(w,h) x (1 + 2 margin), via roi_align.

    roi_align averages an adaptive grid of bilinear samples per output pixel (area-like when shrinking);
    outside the frame is zero; boxes holding NaN give zero crops. `frame_index` [K] as in `warp_affine`.
    """
    x = _nchw(frames).float()
    idx = torch.arange(len(boxes), device=x.device) if frame_index is None else frame_index.to(x.device)
    b = boxes.to(x.device, torch.float32)
    ok = torch.isfinite(b).all(1)
    b = torch.where(ok[:, None], b, torch.tensor([0.0, 0.0, 1.0, 1.0], device=x.device))
    centre = (b[:, :2] + b[:, 2:]) / 2
    half = (b[:, 2:] - b[:, :2]).max(1, keepdim=True).values * (0.5 + margin)
    # pixel-centre coordinates -> roi_align's aligned=True continuous ones (pixel i spans [i, i+1))
    rois = torch.cat([idx[:, None].to(b), centre - half + 0.5, centre + half + 0.5], 1)
    pad = F.pad(x, (1, 1, 1, 1))  # true zeros outside: roi_align clamps samples within 1 px of the border
    rois[:, 1:] += 1
    crops = roi_align(pad, rois, (size, size), spatial_scale=1.0, sampling_ratio=0, aligned=True)
    return crops * ok.to(crops)[:, None, None, None]
