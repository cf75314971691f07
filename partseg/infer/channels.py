"""Derived input channels shared by training and prediction.

The aneurysm paper (Chen et al., coarse-to-fine) feeds the fine network two channels: the
vessel image and its Sobel contour. :func:`sobel_contour` computes the contour of one channel;
:func:`add_sobel_channel` appends it to a (C, Z, Y, X) box. Both the dataset (on every box it
reads, before augmentation) and the predictor (``derive=add_sobel_channel``) must call the same
function so the network sees the same input at training and at inference.

Outside the volume the zero pad rule applies (``mode="constant"``), so the contour of a box
equals the contour of the whole volume except within one voxel of the box border, which lies in
the margin (context) anyway.
"""

from __future__ import annotations

import numpy as np


def sobel_contour(image: np.ndarray, *, dilate: int = 0) -> np.ndarray:
    """Sobel gradient magnitude of a (Z, Y, X) or (Y, X) image.

    The scale is fixed (a unit step gives 0.5 on the two voxels beside it), never relative to
    the box, so a box's contour matches the whole volume's away from the box border.

    Args:
        image: one channel.
        dilate: grey dilation of the image by this many voxels before the gradient (the paper
            slightly dilates the extracted arteries to smooth the vessel surface).

    Returns:
        float32 array of the image's shape; 0 where the image is flat.

    Example:
        >>> image = np.zeros((3, 3, 8), np.float32); image[..., 3:] = 1
        >>> sobel_contour(image)[1, 1].round(2).tolist()  # step at x = 3, volume end at x = 8
        [0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.5]
    """
    from scipy import ndimage

    data = np.asarray(image, np.float32)
    if dilate > 0:
        data = ndimage.grey_dilation(data, size=(2 * dilate + 1,) * data.ndim, mode="constant")
    squares = np.zeros(data.shape, np.float32)
    for axis in range(data.ndim):
        grad = ndimage.sobel(data, axis=axis, mode="constant", output=np.float32)
        squares += grad * grad
    # Sobel = central difference (2 per unit step) x [1, 2, 1] smoothing (4) per other axis
    return np.sqrt(squares) / np.float32(2 * 4 ** (data.ndim - 1))


def add_sobel_channel(image: np.ndarray, channel: int = 0, *, dilate: int = 0) -> np.ndarray:
    """Append the Sobel contour of ``image[channel]``: (C, Z, Y, X) -> (C + 1, Z, Y, X).

    Example:
        >>> add_sobel_channel(np.zeros((1, 2, 2, 2), np.float32)).shape
        (2, 2, 2, 2)
    """
    contour = sobel_contour(image[channel], dilate=dilate)
    return np.concatenate([np.asarray(image, np.float32), contour[None]], axis=0)
