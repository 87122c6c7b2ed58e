"""The built-in synthetic MURA v1.1 dataset: radiograph-like images, labels and ground-truth boxes.

Why it exists: every command (train, evaluate, explain, serve) must be
runnable without the 40 GB download, and localisation must be *measured*
against boxes, which real MURA does not have. So the generator draws
musculoskeletal radiographs of the seven MURA body parts from a parametric
upper limb, adds fractures, orthopaedic hardware and lytic lesions to about
40% of studies, and writes the exact MURA v1.1 layout plus ``boxes.csv``.

It is meant to be hard in the ways real films are: fracture lines are 1-2.5 px
wide at 512 px, normal studies carry look-alikes (growth plates, nutrient
canals, bone islands, skin folds, overlapping bones), and everything that is
not the finding (size, exposure, noise, markers, file format, views) is drawn
from streams that never see the label.

Measured (README, "What learns"): from random weights, fractures and lesions
are not learned even with GPU time on 800 patients; ImageNet weights or far
more data are needed. ``difficulty="easy"`` (``--difficulty easy``) draws the
same studies with obvious findings (wide displaced fractures, larger lesions,
thicker hardware, every view of an abnormal study showing its finding);
``findings=("hardware",)`` (``--findings hardware``, the demo's data) draws
orthopaedic hardware alone, which a CPU model learns in minutes. Normal
studies stay byte-identical under both settings, so there is no shortcut.

    from xraylens.data.synthetic import generate
    result = generate("data/synth", patients=300, max_side=512, seed=0, workers=2)
    result.boxes.head()   # path, x0, y0, x1, y1, kind
"""

from xraylens.data.synthetic.writer import GENERATOR_VERSION, SynthResult, generate

__all__ = ["GENERATOR_VERSION", "SynthResult", "generate"]
