"""Examples of your own code that tuneassist runs: a training function (`--train
examples.cifar_style:train`) and Datasets (`--data examples.my_data:datasets`)."""
