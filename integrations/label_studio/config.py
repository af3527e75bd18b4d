"""What the backend reads from a project's labelling config: the image tag and the brush tag.

Label Studio sends the config (XML) with every request. The answer is a BrushLabels region, so
the config must have an <Image> and a <BrushLabels> pointing at it; prompts come from that
image's smart <KeyPointLabels> and <RectangleLabels>.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass

from focsam_onnx.errors import InvalidInput

# The labelling config the README gives (and the end-to-end test uses): smart keypoints (Alt
# for a negative one) and a smart rectangle prompt FocSAM; the mask comes back as a brush region
# with the prompt's label.
LABEL_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="mask" toName="image">
    <Label value="Object" background="#E63946"/>
  </BrushLabels>
  <KeyPointLabels name="click" toName="image" smart="true">
    <Label value="Object" smart="true" background="#2A9D8F" showInline="true"/>
  </KeyPointLabels>
  <RectangleLabels name="box" toName="image" smart="true">
    <Label value="Object" smart="true" background="#264653" showInline="true"/>
  </RectangleLabels>
</View>"""


@dataclass(frozen=True)
class BrushTarget:
    """Where a mask goes. from_name: the <BrushLabels> name; to_name: the <Image> name;
    data_key: the task data field holding the image URL (`$image` -> "image");
    labels: the brush tag's label values, in config order."""

    from_name: str
    to_name: str
    data_key: str
    labels: tuple[str, ...]

    def label_for(self, prompt_label: str | None) -> str:
        """The brush label of a mask made from prompts labelled `prompt_label`: the same name
        when the brush tag has it (the usual config gives both tags the same labels), else
        the brush tag's first label."""
        if prompt_label in self.labels:
            return prompt_label
        if not self.labels:
            raise InvalidInput(f"<BrushLabels name={self.from_name!r}> has no <Label>")
        return self.labels[0]


def brush_target(label_config: str, image_name: str | None = None) -> BrushTarget:
    """The BrushLabels tag (pointing at `image_name`, or the first one) and its image.

    Raises InvalidInput naming what is missing from the config.
    """
    try:
        root = ElementTree.fromstring(label_config)
    except ElementTree.ParseError as err:
        raise InvalidInput(f"the labelling config is not valid XML: {err}") from None
    images = {tag.get("name"): tag.get("value", "") for tag in root.iter("Image")}
    for tag in root.iter("BrushLabels"):
        to_name = tag.get("toName")
        if to_name in images and (image_name is None or to_name == image_name):
            value = images[to_name]
            if not value.startswith("$"):
                raise InvalidInput(f"<Image name={to_name!r}> has value {value!r}; expected a "
                                   "task field such as '$image'")
            labels = tuple(label.get("value") for label in tag.iter("Label"))
            return BrushTarget(tag.get("name"), to_name, value[1:], labels)
    wanted = f" with toName={image_name!r}" if image_name else ""
    raise InvalidInput(f"the labelling config has no <BrushLabels>{wanted} pointing at an "
                       "<Image>; FocSAM answers with a brush mask (see the README's config)")
