"""GSM8K accuracy of a FlexMDM (or the MDM baseline). Usage: python eval/gsm8k.py --help

python eval/gsm8k.py --model runs/instruct_gsm8k_8b/final --data gsm8k_test.jsonl --preset published
"""

from flexretrofit.evaluation.cli import gsm8k_main

if __name__ == "__main__":
    gsm8k_main()
