"""Which training images an epoch draws, how often, in what order, on which process.

Every draw is seeded by (seed, epoch), so a resumed run draws exactly what the uninterrupted run
would have drawn, and every torchrun process computes the same draws and takes its own share.
"""
import torch


def epoch_generator(seed: int, epoch: int, device="cpu") -> torch.Generator:
    """A generator seeded by (seed, epoch): an epoch's draws do not depend on the epochs before it,
    so a resumed run draws exactly what the uninterrupted run would have drawn."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + epoch)
    return generator


SAMPLERS = ("instance", "class", "sqrt", "progressive")


def class_probabilities(counts: torch.Tensor, sampler: str, epoch: int = 0, epochs: int = 1) -> torch.Tensor:
    """How often each class is drawn: in proportion to n_c (instance), uniformly (class), to
    sqrt(n_c) (sqrt), or moving linearly from instance to class over the epochs (progressive,
    Kang et al., ICLR 2020: p = (1 - t/T) p_instance + (t/T) p_class, reaching class at the last epoch)."""
    counts = counts.double()
    instance = counts / counts.sum()
    balanced = (counts > 0).double() / (counts > 0).sum()
    if sampler == "instance":
        return instance
    if sampler == "class":
        return balanced
    if sampler == "sqrt":
        return counts.sqrt() / counts.sqrt().sum()
    if sampler == "progressive":
        t = epoch / max(1, epochs - 1)
        return (1 - t) * instance + t * balanced
    raise ValueError(f"unknown sampler {sampler!r}")


def sampler_at(sampler: str, epoch: int, drs=None) -> str:
    """Deferred re-sampling (Cao et al. 2019): instance sampling until epoch `drs` (1-based), class after."""
    if drs is not None:
        return "class" if epoch + 1 >= drs else "instance"
    return sampler


def draws_per_image(labels: torch.Tensor, sampler: str, generator, epoch=0, epochs=1) -> torch.Tensor:
    """How many times each image is drawn this epoch (N draws in all, N = the number of images).

    Instance sampling draws every image once. The others draw each class's number of draws from
    its class probability (multinomial), then spread them over the class's images as evenly as
    possible: whole rounds over the class, the remainder without repetition."""
    num_images = len(labels)
    if sampler == "instance":
        return torch.ones(num_images, dtype=torch.long)
    counts = torch.bincount(labels, minlength=int(labels.max()) + 1)
    probabilities = class_probabilities(counts, sampler, epoch, epochs)
    class_draws = torch.bincount(torch.multinomial(probabilities, num_images, replacement=True,
                                                   generator=generator), minlength=len(counts))
    draws = torch.zeros(num_images, dtype=torch.long)
    for c in torch.nonzero(counts).flatten().tolist():
        members = torch.nonzero(labels == c).flatten()
        rounds, extra = divmod(int(class_draws[c]), len(members))
        draws[members] = rounds
        draws[members[torch.randperm(len(members), generator=generator)[:extra]]] += 1
    return draws


def epoch_order(labels: torch.Tensor, seed: int, epoch: int, sampler="instance", epochs=1, drs=None,
                rank=0, world=1, draws=None) -> torch.Tensor:
    """The image indices this process trains on in one epoch, in order.

    Every process computes the same draws (seeded by seed and epoch) and takes its own share:
    whole images (with all their repeats) are dealt to the processes in a random order, most
    repeated first, back and forth (0, 1, 1, 0, 0, 1, ...) so the shares come out nearly equal; two
    processes never train on the same image in an epoch. The shares are then cut to the same
    length (a process per GPU must run the same number of steps), dropping at most a few draws.
    `draws` (how many times each image is drawn) replaces the sampler's, when an objective sets them."""
    generator = epoch_generator(seed, epoch)
    if draws is None:
        draws = draws_per_image(labels.cpu(), sampler_at(sampler, epoch, drs), generator, epoch, epochs)
    images = torch.nonzero(draws).flatten()
    images = images[torch.randperm(len(images), generator=generator)]
    images = images[torch.sort(draws[images], descending=True, stable=True).indices]
    position = torch.arange(len(images))
    back_and_forth = torch.where((position // world) % 2 == 0, position % world, world - 1 - position % world)
    shares = [images[back_and_forth == r] for r in range(world)]
    sizes = [int(draws[share].sum()) for share in shares]
    mine = shares[rank].repeat_interleave(draws[shares[rank]])
    mine = mine[torch.randperm(len(mine), generator=generator)]
    return mine[:min(sizes)]


def drop_single_last(order: torch.Tensor, batch_size: int) -> torch.Tensor:
    """BatchNorm cannot train on a batch of one image: leave such a last image out this epoch."""
    if len(order) > 1 and len(order) % batch_size == 1:
        return order[:-1]
    return order
