"""decoptim core: pure tensor math (regularisers, supports, solvers, decoders, certificates).

Nothing here imports an inference engine.
"""

from .bok import BestOfK
from .coordinated import (
    Codes,
    coordinated_sample,
    coordinated_sample_in_set,
    group_codes,
    start_codes,
)
from .decoders import (
    Decoder,
    Entmax,
    Epsilon,
    Eta,
    Greedy,
    MinP,
    SimplexDecoder,
    Softmax,
    Sparsemax,
    TopK,
    TopP,
    Typical,
)
from .problem import (
    Certificate,
    KLCoverage,
    Objective,
    RegularizedLinear,
    SimplexProblem,
    frank_wolfe_certificate,
)
from .regularizers import KL, Regularizer, Shannon, Tsallis, WeightedSum
from .seeding import manual_seed
from .solvers import (
    entmax15_sort,
    mirror_ascent,
    softmax_on_support,
    solve,
    sparsemax_sort,
    threshold_bisect,
)
from .supports import (
    EpsilonSupport,
    EtaSupport,
    Full,
    Intersect,
    Mask,
    MinPSupport,
    Support,
    TopKSupport,
    TopPSupport,
    TypicalSupport,
)

__all__ = [
    "KL",
    "BestOfK",
    "Certificate",
    "Codes",
    "Decoder",
    "Entmax",
    "Epsilon",
    "EpsilonSupport",
    "Eta",
    "EtaSupport",
    "Full",
    "Greedy",
    "Intersect",
    "KLCoverage",
    "Mask",
    "MinP",
    "MinPSupport",
    "Objective",
    "RegularizedLinear",
    "Regularizer",
    "Shannon",
    "SimplexDecoder",
    "SimplexProblem",
    "Softmax",
    "Sparsemax",
    "Support",
    "TopK",
    "TopKSupport",
    "TopP",
    "TopPSupport",
    "Tsallis",
    "Typical",
    "TypicalSupport",
    "WeightedSum",
    "coordinated_sample",
    "coordinated_sample_in_set",
    "entmax15_sort",
    "frank_wolfe_certificate",
    "group_codes",
    "manual_seed",
    "mirror_ascent",
    "softmax_on_support",
    "solve",
    "sparsemax_sort",
    "start_codes",
    "threshold_bisect",
]
