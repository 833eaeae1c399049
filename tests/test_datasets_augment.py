"""On-device batched augmentation, checked against torchvision's own crop, pad and flip."""
import pytest
import torch
import torchvision.transforms.functional as TF

from sparsity_bench.datasets import Pixels, TensorSplit, channel_stats
from sparsity_bench.datasets.augment import CropFlip


def _images(n, c=3, h=8, w=8, seed=0):
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _torchvision_variants(img, padding):
    """Every (top, left, mirrored) output RandomCrop(padding, fill=0) + RandomHorizontalFlip can give."""
    h, w = img.shape[-2:]
    padded = TF.pad(img, [padding])
    out = {}
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            crop = TF.crop(padded, top, left, h, w)
            out[(top, left, False)] = crop
            out[(top, left, True)] = TF.hflip(crop)
    return out


def _which(out, variants):
    return [key for key, v in variants.items() if torch.equal(out, v)]


def test_crop_flip_gives_exactly_torchvision_crops_and_mirrors():
    x = _images(48)
    out = CropFlip(padding=2, flip=True)(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    seen = []
    for i in range(len(x)):
        (key,) = _which(out[i], _torchvision_variants(x[i], 2))  # random pixels: exactly one variant matches
        seen.append(key)
    assert len({(t, l) for t, l, _ in seen}) > 10  # the offsets vary (25 possible)
    assert {m for _, _, m in seen} == {True, False}  # some mirrored, some not
    assert any((t, l) != (2, 2) for t, l, _ in seen)  # content shifted, zero border shows
    assert (out == 0).any() and not (x == 0).all()


def test_crop_flip_switches():
    x, g = _images(32), torch.Generator().manual_seed(2)
    assert torch.equal(CropFlip(padding=0, flip=False)(x, g), x)
    flipped = CropFlip(padding=0, flip=True)(x, g)
    mirrored = torch.tensor([torch.equal(flipped[i], x[i].flip(-1)) for i in range(len(x))])
    same = torch.tensor([torch.equal(flipped[i], x[i]) for i in range(len(x))])
    assert (mirrored | same).all() and mirrored.any() and same.any()
    shifted = CropFlip(padding=3, flip=False)(x, g)
    for i in range(len(x)):
        assert all(not m for _, _, m in _which(shifted[i], _torchvision_variants(x[i], 3)))


def test_augmented_split_keeps_labels_shapes_and_ranges_and_varies():
    n = 12
    x = _images(n, h=6, w=6, seed=3)
    y = torch.arange(n)  # label = index, to trace each example
    split = TensorSplit(x, y, Pixels(), CropFlip(padding=1, flip=True))
    g = torch.Generator().manual_seed(0)
    epochs = [list(split.batches(5, g)) for _ in range(2)]
    for batches in epochs:
        assert [len(b[1]) for b in batches] == [5, 5, 2]
        xs, ys = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
        assert sorted(ys.tolist()) == list(range(n))
        assert xs.dtype == torch.float32 and xs.shape == (n, 3, 6, 6) and xs.min() >= 0 and xs.max() <= 1
        for img, label in zip(xs, ys):  # each example is a crop/mirror of the image its label names
            pixels = (img * 255).round().to(torch.uint8)
            assert _which(pixels, _torchvision_variants(x[label], 1)), label
    assert not torch.equal(torch.cat([b[0] for b in epochs[0]]), torch.cat([b[0] for b in epochs[1]]))
    # the same generator state gives the same batches (exact resume)
    again = list(split.batches(5, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(again, epochs[0]))
    # evaluation order: in order, never augmented
    ev = torch.cat([b[0] for b in split.batches(5)])
    assert torch.equal(ev, x.float() / 255) and torch.equal(split.examples(4), x[:4].float() / 255)


def test_uint8_pixels_are_normalised_per_batch_with_hand_statistics():
    x = _images(20, c=2, h=4, w=4, seed=4)
    mean, std = channel_stats(x)
    ref = x.double().div(255).permute(1, 0, 2, 3).reshape(2, -1)
    assert torch.allclose(mean.view(-1).double(), ref.mean(1), atol=1e-6)
    assert torch.allclose(std.view(-1).double(), ref.std(1), atol=1e-6)
    split = TensorSplit(x, torch.zeros(20, dtype=torch.long), Pixels(mean, std))
    out = torch.cat([b[0] for b in split.batches(7)])
    assert torch.allclose(out, (x.float() / 255 - mean) / std, atol=1e-6)
    per_channel = out.permute(1, 0, 2, 3).reshape(2, -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(2), atol=1e-5)
    assert torch.allclose(per_channel.std(1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("batch", [1, 256])
def test_crop_flip_draws_from_the_given_generator_only(batch):
    x = _images(batch, h=4, w=4)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = CropFlip()(x, torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG (dropout, gates) is untouched
    assert torch.equal(a, CropFlip()(x, torch.Generator().manual_seed(5)))
