"""How a data-parallel training step grows with the number of ranks.

    mpi_model.py --compute-s T --bytes B [--ranks 1,2,4,...]
                 [--links 1,100] [--latency-us 5] [--tokens-per-rank K]

Each rank computes its own batch in T seconds (measured: one rank's step),
then the gradient sums (B bytes, the artifact's reduced buffer) are
all-reduced. A ring all-reduce moves 2 (N - 1) / N * B bytes in and out of
every rank in 2 (N - 1) messages, so at a link of L Gb/s it takes
    2 (N - 1) / N * B * 8 / (L * 1e9)  +  2 (N - 1) * latency
seconds, not overlapped with the compute (stlm's compiled step hands over
the gradients when its backward pass ends). Prints, per link and rank
count, the step time, the all-reduce's share and the scaling efficiency
(T / step time: the fraction of N ranks' compute that turns into progress).
"""
import argparse


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--compute-s", type=float, required=True)
    p.add_argument("--bytes", type=float, required=True)
    p.add_argument("--ranks", default="1,2,4,8,16,32,64")
    p.add_argument("--links", default="1,100",
                   help="link bandwidths in Gb/s")
    p.add_argument("--latency-us", type=float, default=5.0)
    p.add_argument("--tokens-per-rank", type=float, default=0)
    a = p.parse_args()
    ranks = [int(r) for r in a.ranks.split(",")]
    print("compute %.3f s per step per rank; %.1f MB all-reduced per step"
          % (a.compute_s, a.bytes / 1e6))
    for link in [float(x) for x in a.links.split(",")]:
        print("\n%g Gb/s links, %g us per message:" % (link, a.latency_us))
        head = "| ranks | all-reduce s | step s | all-reduce share | efficiency |"
        if a.tokens_per_rank:
            head += " tokens/s |"
        print(head)
        print("|" + " --- |" * (head.count("|") - 1))
        for n in ranks:
            moved = 2 * (n - 1) / n * a.bytes
            reduce_s = moved * 8 / (link * 1e9) + \
                2 * (n - 1) * a.latency_us * 1e-6
            step = a.compute_s + reduce_s
            row = "| %d | %.3f | %.3f | %.1f %% | %.1f %% |" % (
                n, reduce_s, step, 100 * reduce_s / step,
                100 * a.compute_s / step)
            if a.tokens_per_rank:
                row += " %.0f |" % (n * a.tokens_per_rank / step)
            print(row)


if __name__ == "__main__":
    main()
