"""``image_shape`` reads the size ``open_image`` will decode to (EXIF rotation included) from the header."""
import io

import numpy as np
import pytest
from PIL import Image

from xcos_lightning.datamodules.image_io import image_shape, open_image
from xcos_lightning.errors import DataFormatError


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_shape_is_that_of_the_decoded_upright_image(orientation):
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(np.zeros((40, 90, 3), np.uint8)).save(buf, "JPEG", exif=exif)
    decoded = np.asarray(open_image(buf.getvalue(), "photo.jpg"))
    assert image_shape(buf.getvalue(), "photo.jpg") == decoded.shape[:2]
    assert decoded.shape[:2] == ((90, 40) if orientation in (6, 8) else (40, 90))


def test_a_file_that_is_no_image_is_named(tmp_path):
    (tmp_path / "notes.jpg").write_text("not a photo")
    with pytest.raises(DataFormatError, match="notes.jpg: cannot decode image"):
        image_shape(tmp_path / "notes.jpg", "notes.jpg")
