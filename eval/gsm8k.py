"""GSM8K accuracy of a FlexMDM (or the MDM baseline). Usage: python eval/gsm8k.py --help

python eval/gsm8k.py --model runs/instruct_gsm8k_8b/final --preset published

The shipped GSM8K test split is the default; --data path.jsonl or --data hub evaluates another source.
"""

from flexretrofit.evaluation.cli import gsm8k_main

if __name__ == "__main__":
    gsm8k_main()
