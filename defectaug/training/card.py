"""The model card a training run writes next to its weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from defectaug.generators.hub import PretrainedDefectGenerator


def training_card(generator: PretrainedDefectGenerator, summary: dict[str, Any]) -> ModelCard:
    """A model card recording how ``generator`` was trained (command, data, wall time, settings).

    The licence is ``other``: weights inherit the terms of the data they were trained on, which the
    trainer cannot know; a card meant for sharing states them (see ``pretrained_cards/``).
    """
    dataset = Path(summary["data"]).name or "custom"
    data = ModelCardData(
        license="other",
        library_name="defectaug",
        tags=["defectaug", "defect-synthesis", "image-generation", generator.architecture],
        datasets=[dataset],
        metrics=["kid", "fid"],
    )
    counts = ", ".join(f"{name} {count}" for name, count in summary["crop_counts"].items())
    minutes = summary["wall_time_s"] / 60.0
    budget_note = " (stopped by the time budget)" if summary["stopped_by_time_budget"] else ""
    body = f"""# {generator.architecture} defect generator trained on `{dataset}`

Generates defect layers (content + alpha mask) of the types {", ".join(generator.defect_types)}
at {generator.layer_size[0]}x{generator.layer_size[1]} px, {generator.channels} channel(s).

```python
import defectaug
generator = defectaug.load_generator("<this folder>")
layers = generator.sample(8, "{generator.defect_types[0]}", generator=0)  # DefectLayer
```

## Training

- Data: `{summary["data"]}`, split `{summary["split"]}`; one crop per connected defect region:
  {counts}.
- Command: `{summary["command"]}`
- {summary["iterations"]} iterations in {minutes:.1f} min wall time on `{summary["device"]}`
  ({summary["torch_threads"]} torch threads){budget_note}.
- The weights are an exponential moving average of the trained generator (`ema_decay` below).

Settings:

```json
{json.dumps(summary["train_config"], indent=2)}
```

The weights inherit the terms of the training data; check them before sharing this model.
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
