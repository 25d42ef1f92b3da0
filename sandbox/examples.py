"""Typical candidate programs, one per solver package, all following the output protocol.

Each solves the same small MIP (maximize 5x + 4y s.t. 6x + 4y <= 24, x + 2y <= 6, x, y >= 0
integer; optimum 20 at x=4, y=0, while the LP relaxation gives 21) or its LP relaxation.
Used by the tests, to show each package works in the image, and by the benchmark.
"""

from __future__ import annotations

MIP_OPTIMUM = 20.0
LP_OPTIMUM = 21.0

PULP = """
import pulp
m = pulp.LpProblem("toy", pulp.LpMaximize)
x = pulp.LpVariable("x", lowBound=0, cat="Integer")
y = pulp.LpVariable("y", lowBound=0, cat="Integer")
m += 5 * x + 4 * y
m += 6 * x + 4 * y <= 24
m += x + 2 * y <= 6
m.solve(pulp.PULP_CBC_CMD(msg=False))
print("STATUS:", pulp.LpStatus[m.status])
print("OBJECTIVE:", pulp.value(m.objective))
"""

HIGHSPY = """
import highspy
h = highspy.Highs()
h.setOptionValue("output_flag", False)
x = h.addIntegral(lb=0)
y = h.addIntegral(lb=0)
h.addConstr(6 * x + 4 * y <= 24)
h.addConstr(x + 2 * y <= 6)
h.maximize(5 * x + 4 * y)
print("STATUS:", h.modelStatusToString(h.getModelStatus()))
print("OBJECTIVE:", h.getInfo().objective_function_value)
"""

PYOMO = """
import pyomo.environ as pyo
m = pyo.ConcreteModel()
m.x = pyo.Var(domain=pyo.NonNegativeIntegers)
m.y = pyo.Var(domain=pyo.NonNegativeIntegers)
m.obj = pyo.Objective(expr=5 * m.x + 4 * m.y, sense=pyo.maximize)
m.c1 = pyo.Constraint(expr=6 * m.x + 4 * m.y <= 24)
m.c2 = pyo.Constraint(expr=m.x + 2 * m.y <= 6)
result = pyo.SolverFactory("appsi_highs").solve(m)
print("STATUS:", result.solver.termination_condition)
print("OBJECTIVE:", pyo.value(m.obj))
"""

ORTOOLS = """
from ortools.linear_solver import pywraplp
s = pywraplp.Solver.CreateSolver("SCIP")
x = s.IntVar(0, s.infinity(), "x")
y = s.IntVar(0, s.infinity(), "y")
s.Add(6 * x + 4 * y <= 24)
s.Add(x + 2 * y <= 6)
s.Maximize(5 * x + 4 * y)
status = s.Solve()
print("STATUS:", "Optimal" if status == pywraplp.Solver.OPTIMAL else status)
print("OBJECTIVE:", s.Objective().Value())
"""

ORTOOLS_CPSAT = """
from ortools.sat.python import cp_model
m = cp_model.CpModel()
x = m.NewIntVar(0, 100, "x")
y = m.NewIntVar(0, 100, "y")
m.Add(6 * x + 4 * y <= 24)
m.Add(x + 2 * y <= 6)
m.Maximize(5 * x + 4 * y)
solver = cp_model.CpSolver()
solver.parameters.num_workers = 1
status = solver.Solve(m)
print("STATUS:", solver.StatusName(status))
print("OBJECTIVE:", solver.ObjectiveValue())
"""

SCIPY = """
import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
c = -np.array([5.0, 4.0])
constraints = LinearConstraint(np.array([[6.0, 4.0], [1.0, 2.0]]), -np.inf, [24.0, 6.0])
res = milp(c, constraints=constraints, integrality=[1, 1], bounds=Bounds(0, np.inf))
print("STATUS:", "Optimal" if res.success else res.message)
print("OBJECTIVE:", -res.fun)
"""

SCIPY_LP = """
from scipy.optimize import linprog
res = linprog([-5, -4], A_ub=[[6, 4], [1, 2]], b_ub=[24, 6], bounds=[(0, None), (0, None)])
print("Status:", "Optimal" if res.status == 0 else res.message)
print("Optimal value:", -res.fun)
"""

# (name, code, expected objective)
SOLVER_CANDIDATES: tuple[tuple[str, str, float], ...] = (
    ("pulp", PULP, MIP_OPTIMUM),
    ("highspy", HIGHSPY, MIP_OPTIMUM),
    ("pyomo_appsi_highs", PYOMO, MIP_OPTIMUM),
    ("ortools_scip", ORTOOLS, MIP_OPTIMUM),
    ("ortools_cpsat", ORTOOLS_CPSAT, MIP_OPTIMUM),
    ("scipy_milp", SCIPY, MIP_OPTIMUM),
    ("scipy_linprog", SCIPY_LP, LP_OPTIMUM),
)
