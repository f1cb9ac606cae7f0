"""A trained run, ready to predict: its best checkpoint's model on a device, with the
normalisation and image size it was trained with; its logits and its penultimate features.
2_test.py (through toolkit/evaluation.py), 5_predict.py and 6_active.py all predict through it."""
from dataclasses import dataclass
from pathlib import Path

import torch

import get_model
import models
from toolkit import engine
from toolkit.cli import UserError
from toolkit.data import Batches, ImageSet, Normalise, model_inputs
from toolkit.record import Checkpoint, load_checkpoint
from toolkit.runs import require_best_checkpoint


@dataclass(kw_only=True)
class PredictionSettings:
    """Where and how a run predicts (the scripts' arguments of the same names)."""
    device: str = "auto"
    precision: str = "auto"
    batchsize: int = 128
    workers: int = 2
    cache_gb: float = 4.0
    progress: bool = True
    data_root: Path | None = None  # the run's dataset is below it (default: the one it was trained from)


def build_trained_model(checkpoint: Checkpoint, source) -> torch.nn.Module:
    """The model a checkpoint holds, with its weights, on the CPU."""
    record = checkpoint.record
    model = get_model.build_model(record.model, len(record.class_names), record.height, record.width)
    if record.cosine_scale:
        model = models.use_cosine_classifier(model, record.cosine_scale)
    try:
        model.load_state_dict(checkpoint.model)
    except RuntimeError as e:
        raise UserError(f"{source} does not fit model {record.model}: {str(e).splitlines()[0]}") from None
    return model


class Predictor:
    """Logits of images for a trained model. `Predictor.of_run(RUN_DIR)` takes the run's best
    checkpoint; `Predictor(path)` any checkpoint of this toolkit."""

    def __init__(self, path: Path, device="auto", precision="auto", distributed=None):
        self.path = Path(path)
        self.checkpoint = load_checkpoint(self.path)
        self.record = self.checkpoint.record
        self.device = engine.pick_device(device) if isinstance(device, str) else device
        self.model = build_trained_model(self.checkpoint, f"checkpoint {self.path}")
        self.model = engine.prepare_model(self.model, self.device).eval()
        self.engine = engine.Engine(self.model, None, self.device, engine.pick_precision(precision, self.device),
                                    distributed=distributed)
        self.normalise = Normalise(self.record.mean, self.record.std).to(self.device)
        self.memory_format = engine.memory_format(self.model)

    @classmethod
    def of_run(cls, run_dir: Path, **options) -> "Predictor":
        return cls(require_best_checkpoint(run_dir), **options)

    @property
    def precision(self) -> engine.Precision:
        return self.engine.precision

    def batches(self, image_set: ImageSet, workers: int = 2) -> Batches:
        return Batches(image_set, self.normalise, self.memory_format, workers=workers)

    def predict(self, image_set: ImageSet, batch_size: int = 128, workers: int = 2, progress=True,
                desc="predict") -> tuple:
        """(labels, float32 logits) of every image of the set, in order, on the CPU."""
        return self.engine.predict(self.batches(image_set, workers), batch_size, progress, desc)

    def classifier(self) -> torch.nn.Module:
        """The model's classifier layer (get_model.classifier_layer): its input is the features."""
        return get_model.classifier_layer(self.model)

    def predict_with_features(self, image_set: ImageSet, batch_size: int = 128, workers: int = 2, progress=True,
                              desc="predict") -> tuple:
        """(labels, float32 logits, float32 penultimate-layer features) of every image of the set, in
        order, on the CPU. The features are what the classifier layer receives, caught by a forward
        hook; a convolutional classifier's input is averaged over its map."""
        captured = []

        def keep_input(module, inputs, output):
            x = inputs[0].float()
            captured.append((x.mean(dim=(2, 3)) if x.ndim == 4 else x).flatten(1))

        handle = self.classifier().register_forward_hook(keep_input)
        try:
            labels, logits = self.predict(image_set, batch_size, workers, progress, desc)
        finally:
            handle.remove()
        features = torch.cat(captured).cpu() if captured else torch.empty(0, 0)
        return labels, logits, features

    def logits(self, images: torch.Tensor, mirrored=False) -> torch.Tensor:
        """float32 logits on the CPU of uint8 images (N, 3, H, W) of the record's size; with
        `mirrored`, the log of the mean probability of each image and its horizontal mirror."""
        images = images.to(self.device)
        logits = self.engine.logits(model_inputs(images, self.normalise, self.memory_format))
        if not mirrored:
            return logits.cpu()
        flipped = self.engine.logits(model_inputs(images.flip(3), self.normalise, self.memory_format))
        return ((logits.softmax(dim=1) + flipped.softmax(dim=1)) / 2).log().cpu()
