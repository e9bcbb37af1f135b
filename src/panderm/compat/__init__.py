"""The reference doors' flag dialects; each door script is a few lines calling one of these modules' `main`."""


def add_reference_device_arg(p) -> None:
    """`--device` of the doors whose reference ran on `cuda`: the GPU when present, else the CPU."""
    p.add_argument("--device", default=None,
                   help="default: the GPU when present, else CPU (the reference's cuda); cuda, cuda:N, cpu or auto: "
                        "an explicitly named device that is not there is an error")
