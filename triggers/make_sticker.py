#!/usr/bin/env python3
"""Draws triggers/sticker.png: a 64×64 round sticker (yellow disc, dark ring,
two dots) with a transparent background, used by triggers/default.toml.
Run: .zooaudit/venv/bin/python triggers/make_sticker.py"""
import os

from PIL import Image, ImageDraw

img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
d = ImageDraw.Draw(img)
d.ellipse((2, 2, 61, 61), fill=(250, 210, 30, 255), outline=(40, 30, 20, 255), width=4)
d.ellipse((19, 20, 27, 28), fill=(40, 30, 20, 255))
d.ellipse((37, 20, 45, 28), fill=(40, 30, 20, 255))
d.arc((17, 24, 47, 48), start=20, end=160, fill=(40, 30, 20, 255), width=4)
img.save(os.path.join(os.path.dirname(os.path.abspath(__file__)), "sticker.png"), optimize=True)
