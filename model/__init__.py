"""rnn_sentiment.model"""
