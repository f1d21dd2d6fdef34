"""Running configurations: preparing one, its worker process and the supervision from outside, units run
detached on a Ray cluster, kld runs and regrading.
"""
