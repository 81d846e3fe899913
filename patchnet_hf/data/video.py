"""Frames sampled evenly from a video: one reader for dataset conversion and for prediction."""

from __future__ import annotations

import os

import cv2
import numpy as np

from .transforms import CorruptImageError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")


def sample_video_frames(path: str | os.PathLike, num_frames: int) -> tuple[list[int], list[np.ndarray]]:
    """`num_frames` frames spread evenly over a video, first and last included (fewer when it is shorter).

    Returns the indices of the frames read and the frames, RGB uint8 `(H, W, 3)`. A sampled frame that does
    not decode is skipped; a video that cannot be opened or yields no frame raises `CorruptImageError` naming
    the file.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames={num_frames} must be at least 1.")
    capture = cv2.VideoCapture(os.fspath(path))
    if not capture.isOpened():
        raise CorruptImageError(f"cannot open video {path}")
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if count <= 0:  # some containers do not store it: count by demuxing
            while capture.grab():
                count += 1
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        wanted = set(np.linspace(0, max(count - 1, 0), min(num_frames, max(count, 1))).round().astype(int).tolist())
        indices, frames = [], []
        # Reading in order is slower than seeking but exact for every codec.
        for index in range(max(wanted, default=-1) + 1):
            if not capture.grab():
                break
            if index in wanted:
                ok, frame = capture.retrieve()
                if ok:
                    indices.append(index)
                    frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise CorruptImageError(f"cannot decode any frame of video {path}")
    return indices, frames
