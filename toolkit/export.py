"""A trained model as a portable file: ONNX with the normalisation and softmax folded in.

model.onnx takes float32 RGB images (N, 3, H, W) with values 0-255, any batch size N, and
returns class probabilities (N, K); classes.json says what the model expects and returns. The
file is checked against PyTorch with onnxruntime before it is put in place, so a model.onnx
that exists has passed that check.
"""
import inspect
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from toolkit import data, evaluation, images
from toolkit.cli import UserError, counted
from toolkit.decisions import Decision
from toolkit.files import write_atomically, write_json
from toolkit.record import Checkpoint, RunRecord

INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
OPSET = 17
TOLERANCE = 1e-4  # largest allowed difference of a probability between onnxruntime and PyTorch
CHECK_IMAGES = 256  # the parity check uses at most this many images, spread over the ones offered


class DeployedModel(nn.Module):
    """0-255 RGB images -> class probabilities: the training normalisation and a softmax (of the
    logits divided by the temperature, when one was fit) around the model. The temperature is
    inside because float32 probabilities cannot be re-scaled afterwards: a class whose logit
    trails by 104 has probability 0, which no temperature brings back."""

    def __init__(self, model: nn.Module, mean, std, temperature: float = 1.0):
        super().__init__()
        self.normalise = data.Normalise(mean, std)
        self.model = model
        self.temperature = temperature

    def forward(self, images):
        logits = self.model(self.normalise(images))
        return (logits if self.temperature == 1.0 else logits / self.temperature).softmax(dim=1)


def deployed_model(model: nn.Module, record: RunRecord, temperature: float = 1.0) -> DeployedModel:
    return DeployedModel(model, record.mean, record.std, temperature).to("cpu", torch.float32).eval()


def write_onnx(deployed: DeployedModel, path: Path, height: int, width: int):
    """The legacy TorchScript exporter: it needs no package beyond torch (the dynamo exporter
    needs onnxscript). Its deprecation and constant-folding notices are silenced here: the
    parity check is what vouches for the file."""
    example = torch.full((2, 3, height, width), 128.0)
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(deployed, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          opset_version=OPSET, **legacy)


@torch.inference_mode()
def max_difference(onnx_path: Path, deployed: DeployedModel, images: torch.Tensor, batch_size: int) -> float:
    """Largest absolute difference of the probabilities of onnxruntime and PyTorch (fp32) on uint8 images."""
    import onnxruntime  # only exports need it

    try:
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise UserError(f"onnxruntime cannot load the exported model ({type(e).__name__}: "
                        f"{str(e).splitlines()[0]}); the export failed") from None
    differences = []
    for chunk in images.split(batch_size):
        pixels = chunk.float()
        expected = deployed(pixels).numpy()
        exported = session.run([OUTPUT_NAME], {INPUT_NAME: pixels.numpy()})[0]
        differences.append(np.abs(exported - expected).max())
    return float(np.max(differences))  # NaN, if any, stays NaN and fails the check


def export_onnx(model: nn.Module, checkpoint: Checkpoint, folder: Path, check_images: torch.Tensor,
                batch_size: int = 128, decision=None) -> float:
    """Write folder/model.onnx and folder/classes.json; returns the parity check's difference.

    The model is exported to a temporary file and checked on `check_images` (uint8, N x 3 x H x W);
    only a file that passes replaces model.onnx. A failed check raises a UserError. `decision` (a
    decisions.Decision): its temperature goes inside model.onnx, its rule into classes.json, to be
    applied to model.onnx's probabilities (docs/decisions.md has the onnxruntime code)."""
    record = checkpoint.record
    decision = decision or Decision(tuple(record.class_names))
    deployed = deployed_model(model, record, decision.temperature)
    found = {}

    def write_and_check(tmp):
        write_onnx(deployed, tmp, record.height, record.width)
        found["difference"] = max_difference(tmp, deployed, check_images, batch_size)
        if not found["difference"] < TOLERANCE:
            raise UserError(f"the exported model does not match PyTorch: the probabilities differ by up to "
                            f"{found['difference']:.3g} (allowed: below {TOLERANCE:g}) on {len(check_images)} "
                            f"images; model.onnx was not written")

    write_atomically(Path(folder) / "model.onnx", write_and_check)
    write_json(Path(folder) / "classes.json", model_description(checkpoint, decision))
    return found["difference"]


def model_description(checkpoint: Checkpoint, decision=None) -> dict:
    """classes.json: what model.onnx expects and returns, and the decision to apply to its output
    (the argmax at temperature 1 when none was chosen)."""
    record = checkpoint.record
    decision = decision or Decision(tuple(record.class_names))
    described = {**decision.description(),
                 "note": "the temperature is already inside model.onnx: its probabilities are softmax(logits / "
                         "temperature); apply the rule to them"}
    return {
        "class_names": record.class_names,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, record.height, record.width], "dtype": "float32",
                  "channels": "RGB", "range": [0, 255]},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(record.class_names)],
                   "meaning": "class probabilities (softmax), in the order of class_names"},
        "height": record.height, "width": record.width,
        "normalisation": {"mean": record.mean, "std": record.std,
                          "note": "already inside model.onnx: (x / 255 - mean) / std per channel"},
        "model_index": record.model_index, "model_name": record.model_name,
        "dataset": record.dataset, "objective": record.objective, "epoch": checkpoint.epoch,
        "decision": described,
    }


def check_images(run_dir: Path, named: list, height: int, width: int, workers: int = 2) -> tuple:
    """(uint8 images, what they are in words) to check an export on: up to CHECK_IMAGES of the
    images named, else of the run's test (or valid) split, spread evenly over them."""
    if named:
        paths, source = images.find_images(named)[0], "the images given"
    else:
        dataset = evaluation.run_dataset(run_dir, remedy=f"name some images to check the export on: 5_predict.py "
                                                         f"--run {run_dir} --export onnx IMAGES")
        split = data.evaluation_split(dataset, warn=False)
        paths, source = data.scan_split(dataset, split).paths, f"{dataset.name}'s {split} split"
    paths = [paths[i] for i in np.unique(np.linspace(0, len(paths) - 1, CHECK_IMAGES).round().astype(int))]
    decoded = [pixels for _, pixels in images.decoded_batches(paths, height, width, len(paths), workers, [])]
    if not decoded:
        raise UserError(f"none of {source} could be read to check the export on; "
                        f"name readable images: 5_predict.py --run {run_dir} --export onnx IMAGES")
    return decoded[0], f"{counted(len(decoded[0]), 'image')} of {source}"
