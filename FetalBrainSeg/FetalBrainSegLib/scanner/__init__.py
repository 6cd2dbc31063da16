"""The scanner's wire: OpenIGTLink in and out of the streaming engine (`fetalbrainseg stream`)."""
