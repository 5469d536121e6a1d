"""rnn_sentiment.cli"""
