"""The Keras-style API (Keras 1.2 names and arguments, as BigDL exposes them).

A Keras model is a pymodules Module underneath: the same kernels, persistence and Spark paths.

    from pymodules.keras import Sequential, Dense
    model = Sequential()
    model.add(Dense(128, activation="relu", input_shape=(64,)))
    model.add(Dense(10, activation="softmax"))
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, batch_size=32, nb_epoch=10, validation_data=(xv, yv))
"""

from pymodules.keras.engine import KerasLayer
from pymodules.keras.layers import (
    GRU,
    LSTM,
    Activation,
    AveragePooling1D,
    AveragePooling2D,
    AveragePooling3D,
    BatchNormalization,
    Bidirectional,
    Convolution1D,
    Convolution2D,
    Convolution3D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    InputLayer,
    MaxPooling1D,
    MaxPooling2D,
    MaxPooling3D,
    Merge,
    Reshape,
    SimpleRNN,
    TimeDistributed,
    UpSampling2D,
    ZeroPadding2D,
    merge,
)
from pymodules.keras.models import Input, KerasNet, Model, Sequential

Conv1D, Conv2D, Conv3D = Convolution1D, Convolution2D, Convolution3D

__all__ = [
    "GRU", "LSTM", "Activation", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "BatchNormalization", "Bidirectional", "Conv1D", "Conv2D", "Conv3D", "Convolution1D",
    "Convolution2D", "Convolution3D", "Dense", "Dropout", "Embedding", "Flatten",
    "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Input", "InputLayer", "KerasLayer",
    "KerasNet", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "Merge", "Model", "Reshape",
    "Sequential", "SimpleRNN", "TimeDistributed", "UpSampling2D", "ZeroPadding2D", "merge",
]
