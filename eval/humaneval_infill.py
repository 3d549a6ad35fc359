"""HumanEval infilling pass@k of a FlexMDM (or the MDM baseline). Usage: python eval/humaneval_infill.py --help

python eval/humaneval_infill.py --model runs/instruct_infill_8b/final --variant single_line --preset published

--variant: single_line, multi_line, random_span or random_span_light (the official task files, shipped).
"""

from flexretrofit.evaluation.cli import infill_main

if __name__ == "__main__":
    infill_main()
