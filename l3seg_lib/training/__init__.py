"""Training (may import inference, never the reverse).

``splits``    patient-wise test set and folds
``dataset``   slice arrays, augmentation, torch Dataset
``losses``    class-weighted cross-entropy + soft Dice
``trainer``   training one network
``crossval``  patient-wise cross-validation and the fold ensemble
``finetune``  fine-tuning a model file; slice-block folds
``optimize``  Bayesian optimisation of class weights, data ratio and learning rate
"""
