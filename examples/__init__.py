"""Examples of your own code that tuneassist runs (`--train examples.cifar_style:train`)."""
