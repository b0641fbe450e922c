"""The model input's layout, without torch: one float32 row per (user, restaurant) pair, the user's
features f00–f29 then the restaurant's f00–f09 (40 columns). Serving builds its rows here;
:mod:`pipeline.model.inputs` builds the same rows from tensors for training and evaluation."""

from __future__ import annotations

import numpy as np

from pipeline.data.schema import MODEL_INPUT_WIDTH, N_RESTAURANT_FEATURES, N_USER_FEATURES

USER_WIDTH = N_USER_FEATURES
RESTAURANT_WIDTH = N_RESTAURANT_FEATURES
WIDTH = MODEL_INPUT_WIDTH


def check_widths(users_width: int, restaurants_width: int) -> None:
    """ValueError unless the feature tables have the model input's widths (30 and 10)."""
    if (users_width, restaurants_width) != (USER_WIDTH, RESTAURANT_WIDTH):
        raise ValueError(f"model input needs {USER_WIDTH} user and {RESTAURANT_WIDTH} restaurant features, "
                         f"got {users_width} and {restaurants_width}")


def one_user(user: np.ndarray, restaurants: np.ndarray) -> np.ndarray:
    """[n, 40] for one user [30] against n restaurants [n, 10] (a recommendation request)."""
    check_widths(len(user), restaurants.shape[1])
    x = np.empty((len(restaurants), WIDTH), np.float32)
    x[:, :USER_WIDTH] = user
    x[:, USER_WIDTH:] = restaurants
    return x
