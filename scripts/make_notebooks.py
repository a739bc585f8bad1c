"""Regenerate notebooks/*.ipynb from this file (keeps the notebooks reviewable as code)."""
import nbformat as nbf

def nb(cells):
    n = nbf.v4.new_notebook()
    n.cells = [nbf.v4.new_markdown_cell(c[1]) if c[0] == "md" else nbf.v4.new_code_cell(c[1]) for c in cells]
    n.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return n

ct = nb([
("md", """# Sparse-view CT: FBP vs ADMM-TV vs diffusion (DDS)

Simulate an 8-view parallel-beam scan of a 3D phantom, reconstruct it with filtered backprojection,
ADMM-TV and the decomposed diffusion sampler with the shipped `phantom` prior, and compare PSNR/SSIM
per plane. The sizes below are small so that the notebook runs in CI in about a minute; set
`SHAPE = (24, 128, 128)` for the demo size (the shipped prior works at 128x128)."""),
("code", """import torch
from medrecon.phantoms import random_ellipsoids, shepp_logan_3d
from medrecon.volume import Volume
from medrecon.tasks import CTOptions, simulate, to_volume_units
from medrecon.methods import run_method
from medrecon.metrics import format_table, volume_metrics

torch.set_num_threads(2)
SHAPE = (4, 128, 128)   # (Z, Y, X); the shipped priors are 128x128
VIEWS = 8
DDS_STEPS = 10          # 50 is the default; fewer keeps CI fast"""),
("md", "A held-out member of the random-ellipsoid family (seeds >= 1,000,000 are never used for training) and the Shepp-Logan head:"),
("code", """volumes = {
    "held-out ellipsoids": Volume.from_array(random_ellipsoids(SHAPE, seed=1_000_000), modality="CT"),
    "shepp-logan": Volume.from_array(shepp_logan_3d(SHAPE), modality="CT"),
}
results = {}
for name, volume in volumes.items():
    m = simulate(volume, "sparse-view-ct", seed=0, ct=CTOptions(views=VIEWS))
    recons = {
        "fbp": run_method(m, "fbp"),
        "tv": run_method(m, "tv", {"iterations": 60}),
        "dds": run_method(m, "dds", {"prior": "phantom", "steps": DDS_STEPS}),
    }
    results[name] = {k: to_volume_units(v, m) for k, v in recons.items()}
    print(name)
    print(format_table({k: volume_metrics(v, volume.array, 1.0) for k, v in results[name].items()}))"""),
("code", """import matplotlib.pyplot as plt
fig, axes = plt.subplots(2, 4, figsize=(12, 6))
for row, (name, volume) in enumerate(volumes.items()):
    z = SHAPE[0] // 2
    for col, (label, img) in enumerate([("reference", volume.array)] + list(results[name].items())):
        axes[row, col].imshow(img[z], cmap="gray", vmin=0, vmax=1)
        axes[row, col].set_title(f"{name}: {label}", fontsize=8)
        axes[row, col].axis("off")
plt.tight_layout()"""),
("code", """# The orderings this comparison is about (measured, not assumed):
for name in volumes:
    ref = volumes[name].array
    p = {k: volume_metrics(v, ref, 1.0)["psnr"] for k, v in results[name].items()}
    assert p["tv"] > p["fbp"] and p["dds"] > p["fbp"], (name, p)
    print(name, {k: round(v, 2) for k, v in p.items()})"""),
])

mri = nb([
("md", """# Multi-coil CS-MRI: zero-filled vs SENSE vs TV vs diffusion (DDS)

x4 uniform 1D undersampling with 8 simulated birdcage coils on 6 slices of the MNI152 brain
template's held-out test slab (fetch it first: `python scripts/fetch_sample_data.py`), reconstructed
with zero-filling, SENSE, ADMM-TV and DDS with the shipped `brain-mri` prior. Small sizes keep CI fast."""),
("code", """import torch
from medrecon.tasks import MRIOptions, simulate, to_volume_units
from medrecon.methods import run_method
from medrecon.metrics import format_table, volume_metrics

torch.set_num_threads(2)
from medrecon.datasets import brain_mri_slab, take_slab
volume = take_slab(brain_mri_slab("test"), 10, 14)   # 4 slices from the middle of the test slab
SHAPE = volume.shape
m = simulate(volume, "cs-mri", seed=0, mri=MRIOptions(acceleration=4, mask="uniform1d", coils=8))
print(f"effective acceleration x{m.attrs['acceleration']:.2f}")"""),
("code", """recons = {method: to_volume_units(run_method(m, method), m) for method in ("zero-filled", "sense")}
recons["tv"] = to_volume_units(run_method(m, "tv", {"iterations": 40}), m)
recons["dds"] = to_volume_units(run_method(m, "dds", {"prior": "brain-mri", "steps": 10}), m)
data_range = float(volume.array.max())
table = {k: volume_metrics(v, volume.array, data_range) for k, v in recons.items()}
print(format_table(table))
assert table["sense"]["psnr"] > table["zero-filled"]["psnr"]"""),
("code", """import matplotlib.pyplot as plt
fig, axes = plt.subplots(1, 5, figsize=(15, 3))
for ax, (label, img) in zip(axes, [("reference", volume.array)] + list(recons.items())):
    ax.imshow(img[SHAPE[0] // 2], cmap="gray", vmin=0, vmax=data_range); ax.set_title(label); ax.axis("off")"""),
])
nbf.write(ct, "notebooks/compare_fbp.ipynb")
nbf.write(mri, "notebooks/cs_mri.ipynb")
