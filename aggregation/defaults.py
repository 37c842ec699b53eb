"""The engine's defaults, defined once.

The library (``ConsensusEstimator``, ``WorkflowAggregator``, ``WorkflowRetirement``), its command
line (``python -m aggregation``) and the platform (``platform/live/engine.py``) all read them from
here, so a figure measured with the CLI is a figure of the platform. Each says why it is what it is.
"""

from __future__ import annotations

# Every fit/refit re-estimates the share of each answer (Dawid–Skene's EM does), under a Dirichlet
# prior of one pseudo-subject per class (``batch.dawid_skene_em``'s ``class_prior_strength``). Why: most
# real questions are not balanced (GZ1: 72% smooth), and a uniform prior makes every common-class
# subject start as a coin toss: on GZ1's simulated crowds (``bench/engine_class_prior.py``) a uniform
# prior took 9.4 votes per galaxy at 95.2% right, the learned one 7.7 at 96.4%. SWAP as published keeps
# it fixed (``aggregation.swap`` says so explicitly).
LEARN_CLASS_PRIOR = True

# Sybil resistance (issue 25): how much evidence of a volunteer's skill, in answers' worth, the
# engine holds before it takes the volunteer's answers at that skill. A volunteer's evidence is what
# its skill was learned from: one per gold answer, the consensus credit of answers on subjects
# already sure, and at each refit its other answers. It is trusted evidence / (evidence + HALF_TRUST)
# (``core.trust``), its skill's prior the crowd's only as far as it is trusted and otherwise
# uninformative (``core.trusted_prior``), and it counts in the ``min`` guard and the budget as
# evidence / HALF_TRUST, at most 1 (``core.established``).
# Why: an identity costs nothing (a request without a session cookie), so "a new volunteer is an
# average volunteer" (the empirical-Bayes skill prior) let six cookieless posts retire a smooth demo
# galaxy as "star or artifact". A volunteer whose skill is unknown now carries no weight, as SWAP's
# new agents, until gold or the consensus teaches the engine its skill; the guard counts only
# volunteers of established skill, so fresh identities can neither move a posterior nor open the
# guard nor spend the budget, however many (bench/colluders.py). Why 3: half trust after three
# answers' worth of record, the guard's own "three independent looks"; an honest newcomer right on
# three gold subjects is trusted half and counts in full. What it costs on the simulated GZ1 crowd,
# where every volunteer starts unknown: see bench/results/colluders.json. 0 restores the engine
# before issue 25 (every volunteer trusted from its first answer).
HALF_TRUST = 3.0

# Whole-workflow retirement (``aggregation.workflow.WorkflowRetirement``): a subject retires when every
# required task's reach-weighted expected risk is below its bar.
# A question's bar: 1% expected misclassification (posterior 0.99 on a node every volunteer reaches),
# the bar the first-question rule retired at (``FIRST_QUESTION_POLICY``).
QUESTION_BAR = 0.01
# A drawing task's bar: 0.02 expected errors (false + missed + badly placed objects), the box engine's
# own default (``boxes.default_policy``): on the real pedestrian crowd it gives F1 0.893 at 2.35
# workers per image online (0.911 offline with all 7).
DRAWING_BAR = 0.02
# The guard: no subject retires (not even at the budget) before this many counted classifications
# from volunteers of established skill (see HALF_TRUST) when a question is required, so that one
# early streak of unknown volunteers cannot retire it. A drawing-only workflow
# has no such guard (1): the box engine's risk already counts how many have looked and how well they
# draw, and the pedestrian crowd settles most images with two.
MIN_CLASSIFICATIONS = 3
MIN_CLASSIFICATIONS_DRAWING_ONLY = 1
# The whole-subject budget: Galaxy Zoo 2's votes per galaxy. A subject still unsettled after this
# many counted classifications retires with reason "limit"; counted as the guard counts (from
# volunteers of established skill), so that fresh identities cannot spend it.
BUDGET = 40

# The named first-question rule (``"scope": "first_question"``): the GZX comparison's setting.
FIRST_QUESTION_POLICY = "min:3,posterior:0.99,max:40"

# The CLI's ``replay --online`` on a single-question crowd file. Stricter than the platform's 0.01
# bar, and why: public truth-inference crowds (duck, dog) have far weaker, far fewer answers per
# item than Galaxy Zoo's volunteers, and Dawid–Skene's posterior is overconfident there; at risk
# 0.003 duck is within a point of offline at 35% of its answers (aggregation/README.md).
CLI_ONLINE_POLICY = "min:3,risk:0.003"
