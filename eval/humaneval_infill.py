"""HumanEval infilling pass@k of a FlexMDM (or the MDM baseline). Usage: python eval/humaneval_infill.py --help

python eval/humaneval_infill.py --model runs/instruct_infill_8b/final --variant single_line --preset published
"""

from flexretrofit.evaluation.cli import infill_main

if __name__ == "__main__":
    infill_main()
