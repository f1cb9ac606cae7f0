"""A trained run, ready to predict: its best checkpoint's model on a device, with the
normalisation and image size it was trained with. 2_test.py, 5_predict.py and 6_active.py all
predict through it."""
from pathlib import Path

import torch

import get_model
import models
from toolkit import engine
from toolkit.cli import UserError
from toolkit.data import Batches, ImageSet, Normalise, model_inputs
from toolkit.record import Checkpoint, load_checkpoint
from toolkit.runs import require_best_checkpoint


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

    def logits(self, images: torch.Tensor, mirrored=False) -> torch.Tensor:
        """float32 logits on the CPU of uint8 images (N, 3, H, W) of the record's size; with
        `mirrored`, the log of the mean probability of each image and its horizontal mirror."""
        images = images.to(self.device)
        logits = self.engine.logits(model_inputs(images, self.normalise, self.memory_format))
        if not mirrored:
            return logits.cpu()
        flipped = self.engine.logits(model_inputs(images.flip(3), self.normalise, self.memory_format))
        return ((logits.softmax(dim=1) + flipped.softmax(dim=1)) / 2).log().cpu()
