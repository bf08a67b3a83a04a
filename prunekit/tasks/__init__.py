"""What the model is asked to do: encoding data, the loss, and how quality is measured."""
