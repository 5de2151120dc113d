"""Files in and out without surprises: read under a directory by descriptor and within the
read budget every drive reader shares, written so that they appear whole or not at all."""
