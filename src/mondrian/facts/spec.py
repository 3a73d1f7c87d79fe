"""What each fact is: its name, unit, kind, the copy it is measured on, how, and what it
means. `measure()` returns facts in this order (leaving out EXIF the photo lacks), each
`Fact.meaning` comes from here, and docs/facts.md's table is generated from `FACTS`
(tests/docs_reference.py), so the code, the results and the doc say the same thing."""

from __future__ import annotations

from dataclasses import dataclass

# The measurement copies (facts/views.py builds them once per photo).
SAMPLE = "sample"  # every k-th pixel, <= SAMPLE_PIXELS: exact pixel values, an unbiased sample
WORK = "work"  # long side WORK_SIDE, area-averaged: sizes comparable across photos
CROP = "crop"  # a full-resolution centre crop <= CROP_SIDE square: per-pixel noise kept
SALIENCY = "saliency"  # long side SALIENCY_SIDE: spectral residual's scale
FULL = "full"  # the photo's own size or its EXIF
SAMPLE_PIXELS = 500_000
WORK_SIDE = 1024
CROP_SIDE = 1024
SALIENCY_SIDE = 64
# What each copy is, in words (docs/facts.md's table).
VIEW_SIZES = {
    SAMPLE: f"every k-th pixel, <= {SAMPLE_PIXELS / 1e6:g} MP",
    WORK: f"grey, {WORK_SIDE} px long side (area)",
    CROP: f"grey, full-resolution centre crop <= {CROP_SIDE} x {CROP_SIDE}",
    SALIENCY: f"grey, {SALIENCY_SIDE} px long side (of the work copy)",
    FULL: "the photo read (or its EXIF)",
}


@dataclass(frozen=True)
class FactSpec:
    name: str
    kind: str
    unit: str
    view: str
    method: str
    meaning: str


FACTS: tuple[FactSpec, ...] = (
    FactSpec("luminance_p05", "exposure", "share", SAMPLE,
             "5th percentile of Rec. 709 luma (gamma-encoded), 0-1 of full scale",
             "How dark the darkest tones are (the black point)."),
    FactSpec("luminance_p50", "exposure", "share", SAMPLE,
             "median Rec. 709 luma, 0-1 of full scale",
             "The photo's middle tone: low is a dark, low-key photo, high a bright one."),
    FactSpec("luminance_p95", "exposure", "share", SAMPLE,
             "95th percentile of Rec. 709 luma, 0-1 of full scale",
             "How bright the brightest tones are (the white point)."),
    FactSpec("shadows_clipped", "exposure", "share", SAMPLE,
             "share of pixels with any channel at 0",
             "Shadows crushed to pure black, where no detail is left."),
    FactSpec("highlights_clipped", "exposure", "share", SAMPLE,
             "share of pixels with any channel at 255",
             "Highlights blown to pure white (or a pure channel), where no detail is left."),
    FactSpec("zones", "exposure", "share", SAMPLE,
             "share of pixels in each of 11 zones, zone = round(10 x luma)",
             "The tones placed on Ansel Adams' Zone System, zone 0 (black) to X (paper white)."),
    FactSpec("median_zone", "exposure", "zone", SAMPLE,
             "10 x median luma, one decimal",
             "The zone of the middle tone: V is middle grey."),
    FactSpec("sharpness", "sharpness", "", WORK,
             "variance of the Laplacian of grey (0-255)",
             "Fine detail over the whole frame: higher is crisper (or busier)."),
    FactSpec("subject_sharpness", "sharpness", "", WORK,
             "variance of the Laplacian inside the salient region's box",
             "Fine detail where the eye goes: low means the subject is soft."),
    FactSpec("blur", "sharpness", "share", WORK,
             "Crete-Roffet blur effect (as skimage.measure.blur_effect, h_size 11), "
             "the larger of the two axes",
             "0 is sharp, 1 is fully blurred: how much a further blur would change little."),
    FactSpec("noise", "sharpness", "share", CROP,
             "Immerkaer's noise sigma (Laplacian-difference mask), 0-1 of full scale",
             "Grain or sensor noise in flat areas."),
    FactSpec("tilt", "geometry", "degrees", WORK,
             "vote-weighted median lean of the strong Hough lines within 20 degrees of level "
             "or of plumb, whichever set has more votes; a line needs edge pixels along 60% "
             "of the short side; 0 when none does",
             "How far the horizon or dominant line leans: + counter-clockwise."),
    FactSpec("subject_position", "geometry", "share", SALIENCY,
             "[x, y] centroid of the spectral-residual saliency map's salient region, "
             "0-1 of width and height from the top left",
             "Where the eye is drawn."),
    FactSpec("subject_thirds_distance", "geometry", "share", SALIENCY,
             "distance from subject_position to the nearest thirds intersection, "
             "share of the diagonal",
             "0 is the subject on a power point of the rule of thirds."),
    FactSpec("subject_centre_distance", "geometry", "share", SALIENCY,
             "distance from subject_position to the centre, share of the diagonal",
             "0 is a centred subject (a static, formal composition)."),
    FactSpec("aspect_ratio", "geometry", "", FULL, "width / height",
             "The frame's shape: 1.5 is 3:2, 1.333 is 4:3, 1 is square."),
    FactSpec("megapixels", "geometry", "MP", FULL, "width x height / 10^6 of the photo read",
             "The resolution measured (the working copy's, when the upload was reduced)."),
    FactSpec("colourfulness", "colour", "", SAMPLE,
             "Hasler-Susstrunk M = sigma_rgyb + 0.3 mu_rgyb (0-255 scale)",
             "0 is grey, ~15 slightly colourful, ~33 moderately, ~59 quite, >82 very colourful."),
    FactSpec("monochrome", "colour", "", SAMPLE,
             "yes when colourfulness < 3 and under 2% of pixels have saturation > 0.15",
             "Whether the photo is black-and-white (no hue to speak of)."),
    FactSpec("dominant_hues", "colour", "degrees", SAMPLE,
             "peaks of the chroma-weighted hue histogram (opponent-axis hue, 0-360, pixels "
             "with HSV saturation > 0.15), each lobe >= 10% of the hue weight, at most 3",
             "The main colours: 0 red, 60 yellow, 120 green, 180 cyan, 240 blue, 300 magenta."),
    FactSpec("harmony_template", "colour", "", SAMPLE,
             "the narrowest of Cohen-Or et al.'s templates (i, V, L, I, T, Y, X) at its best "
             "rotation whose fit is within 0.05 of the best template's; none for monochrome",
             "The hue harmony the colours follow (i one hue, I complements, T half the wheel)."),
    FactSpec("harmony_fit", "colour", "share", SAMPLE,
             "share of the saturation-weighted hues inside the chosen template's sectors",
             "1 is every colour inside the harmony; low means clashing or scattered colours."),
    FactSpec("focal_length", "exif", "mm", FULL, "EXIF FocalLength", "The lens's focal length."),
    FactSpec("aperture", "exif", "f", FULL, "EXIF FNumber", "The f-number: depth of field."),
    FactSpec("shutter", "exif", "s", FULL, "EXIF ExposureTime", "The exposure time."),
    FactSpec("iso", "exif", "", FULL, "EXIF ISOSpeedRatings", "The sensor's sensitivity."),
    FactSpec("camera", "exif", "", FULL, "EXIF Make and Model", "The camera."),
    FactSpec("captured", "exif", "", FULL, "EXIF DateTimeOriginal (or DateTime)",
             "When the photo was taken, as the camera's clock said."),
)  # fmt: skip
BY_NAME: dict[str, FactSpec] = {spec.name: spec for spec in FACTS}
