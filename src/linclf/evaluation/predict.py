"""Predicting the classes of new inputs with a trained model: image files, or rows of an array. Images
(PNG or JPEG, any size up to MAX_PIXELS) are read with Pillow, turned upright as their EXIF orientation
says, converted to RGB and brought to the model's input size (32x32 for CIFAR-10): centre-cropped to its
aspect ratio when theirs differs, then resized (bicubic, antialiased). The pixels, (H, W, 3) uint8 like
the CIFAR-10 cache, then go through the model's stored pipeline, the same code as `eval`
(evaluate.probabilities)."""
import warnings
from pathlib import Path

import numpy as np

from linclf.evaluation import evaluate
from linclf.util.errors import LinclfError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CHUNK = 256  # images read and scored at a time
MAX_PIXELS = 8192 * 8192  # larger images are refused before they are decoded


def expand(paths):
    """The inputs of `paths`: a file as itself, a folder as its image files (IMAGE_SUFFIXES, any
    case), sorted by name. Returns (paths, errors), errors being (path, message) of empty folders."""
    found, errors = [], []
    for path in map(Path, paths):
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                errors.append((path, f"{path} holds no {', '.join(IMAGE_SUFFIXES)} images"))
            found.extend(images)
        else:
            found.append(path)
    return found, errors


def image_size(trained):
    """(height, width) of the images the model takes; LinclfError when it takes something else."""
    pipe = trained.pipeline
    if pipe.input_kind != "images" or len(pipe.input_shape) != 3 or pipe.input_shape[2] != 3:
        raise LinclfError(f"{trained.path} takes {evaluate.describe_inputs(pipe)}, not RGB images; "
                          f"predict rows of an array with --data FILE.npz")
    return pipe.input_shape[:2]


def read_image(path, size=(32, 32)):
    """Pixels (H, W, 3) uint8 RGB of a PNG or JPEG at the model's `size` (H, W), upright as its EXIF
    orientation says, and a note (None when the image already had that size) saying how it was
    brought there. An image of more than MAX_PIXELS pixels is refused before it is decoded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    height, width = size
    if Path(path).exists() and not Path(path).is_dir() and not Path(path).is_file():
        raise LinclfError(f"{path}: not a regular file (a FIFO or device), not an image")
    too_big = f"more than linclf reads (at most {MAX_PIXELS:,} pixels)"
    try:
        with warnings.catch_warnings():  # Pillow's own warning above 89 M pixels: MAX_PIXELS decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path, formats=("PNG", "JPEG"))
        with opened as image:
            if image.width * image.height > MAX_PIXELS:
                raise LinclfError(f"{path}: {image.width}x{image.height} is {too_big}")
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float grey: scale, do not clip
                grey = np.asarray(image, dtype=np.float64)
                top = 65535.0 if image.mode.startswith("I;16") or grey.max() > 255 else 255.0
                image = Image.fromarray(np.clip(np.round(grey / top * 255), 0, 255).astype(np.uint8))
            rgb = image.convert("RGB")
    except LinclfError:  # said above; a ValueError too, so never taken for Pillow's
        raise
    except FileNotFoundError:
        raise LinclfError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LinclfError(f"{path}: a folder, not an image") from None
    except Image.DecompressionBombError:  # Pillow refuses above 179 M pixels, before we can look
        raise LinclfError(f"{path}: {too_big}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise LinclfError(f"{path}: not a readable PNG or JPEG image ({error})") from None
    note = None
    if rgb.size != (width, height):
        w, h = rgb.size
        note = f"{path} is {w}x{h}:"
        # crop the largest centred box of the model's aspect ratio, so nothing is stretched
        crop_w, crop_h = min(w, round(h * width / height)), min(h, round(w * height / width))
        if (crop_w, crop_h) != (w, h):
            left, top = (w - crop_w) // 2, (h - crop_h) // 2
            rgb = rgb.crop((left, top, left + crop_w, top + crop_h))
            note += f" centre-cropped to {crop_w}x{crop_h},"
        rgb = rgb.resize((width, height), Image.Resampling.BICUBIC)
        note += f" resized to {width}x{height}"
    return np.asarray(rgb, dtype=np.uint8), note


def top_classes(probabilities, class_names, top):
    """The `top` most probable classes of each row of probabilities (N, C), most probable first:
    a list (N) of lists of {"class": name, "probability": p}."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top]
    return [[{"class": class_names[c], "probability": round(float(row[c]), 6)} for c in indices]
            for row, indices in zip(probabilities, order)]


def predict_images(trained, paths, top=3, note=None, progress=None):
    """Yield, in order, {"input": path, "top": [...]} for each image of `paths` (see expand), or
    {"input": path, "error": one line} for one that cannot be read. `note(message)` hears about
    resized images; `progress`, a tqdm-like bar, is updated per image."""
    size = image_size(trained)
    for start in range(0, len(paths), CHUNK):
        entries, pixels = [], []
        for path in paths[start:start + CHUNK]:
            try:
                image, message = read_image(path, size)
            except LinclfError as error:
                entries.append({"input": str(path), "error": str(error)})
            else:
                if message and note:
                    note(message)
                entries.append({"input": str(path), "top": None})
                pixels.append(image)
            if progress is not None:
                progress.update(1)
        if pixels:
            found = iter(top_classes(evaluate.probabilities(trained, np.stack(pixels)), trained.class_names, top))
            for entry in entries:
                if "error" not in entry:
                    entry["top"] = next(found)
        yield from entries


def predict_rows(trained, X, where, top=3):
    """Yield {"row": i, "top": [...]} for each row of features X (N, D) (an array file's)."""
    pipe = trained.pipeline
    if pipe.input_kind != "features":
        raise LinclfError(f"{trained.path} takes {evaluate.describe_inputs(pipe)}, not feature arrays; "
                          f"give it image files")
    if X.shape[1:] != pipe.input_shape:
        raise LinclfError(f"{where} has {X.shape[1]} features (D) but the model takes {pipe.input_shape[0]}")
    for start in range(0, len(X), evaluate.CHUNK):
        rows = top_classes(evaluate.probabilities(trained, X[start:start + evaluate.CHUNK]), trained.class_names, top)
        for offset, entry in enumerate(rows):
            yield {"row": start + offset, "top": entry}
