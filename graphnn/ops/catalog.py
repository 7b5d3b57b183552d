"""Every element-wise op graphnn knows, one line each (see elementwise.declare).

Adding an activation is one line here plus, if it should be public, its name in
`api.ACTIVATIONS` (which makes `gn.<name>` and `MLP(activation=<name>)`).
"""
from .elementwise import declare

# arithmetic
declare("add", "x + y", ("x", "y"), infix="+")
declare("sub", "x - y", ("x", "y"), infix="-")
declare("mul", "x * y", ("x", "y"), infix="*")
declare("div", "x / y", ("x", "y"), infix="/")
declare("pow", "x ** y", ("x", "y"), infix="**")
declare("neg", "-x")
declare("exp", "exp(x)")
declare("log", "log(x)")
declare("sqrt", "sqrt(x)")
declare("abs", "Abs(x)")
declare("square", "x**2")
declare("maximum", "Max(x, y)", ("x", "y"))
declare("minimum", "Min(x, y)", ("x", "y"))
declare("where", "Piecewise((y, Ne(x, 0)), (z, True))", ("x", "y", "z"))
# comparisons give 0/1 in the float dtype (a mask you can multiply by)
declare("gt", "Piecewise((1, x > y), (0, True))", ("x", "y"), infix=">")
declare("lt", "Piecewise((1, x < y), (0, True))", ("x", "y"), infix="<")
declare("ge", "Piecewise((1, x >= y), (0, True))", ("x", "y"), infix=">=")
declare("le", "Piecewise((1, x <= y), (0, True))", ("x", "y"), infix="<=")
declare("eq", "Piecewise((1, Eq(x, y)), (0, True))", ("x", "y"), infix="==")

# activations (lectures 000, 001, 004)
declare("sigmoid", "1/(1 + exp(-x))")
declare("tanh", "tanh(x)")
declare("relu", "Piecewise((x, x > 0), (0, True))")
declare("sign", "sign(x)")
declare("leaky_relu", "Piecewise((x, x > 0), (alpha*x, True))", alpha=0.01)
declare("elu", "Piecewise((x, x > 0), (alpha*(exp(x) - 1), True))", alpha=1.0)
declare("gelu", "x*(1 + erf(x/sqrt(2)))/2")
declare("silu", "x/(1 + exp(-x))")
declare("softplus", "Piecewise((x + log(1 + exp(-x)), x > 0), (log(1 + exp(x)), True))")
declare("prelu", "Piecewise((x, x > 0), (a*x, True))", ("x", "a"))
declare("trainable_swish", "(c*x + d)/(1 + exp(-(a*x + b)))", ("x", "a", "b", "c", "d"))
declare("erf", "erf(x)")
