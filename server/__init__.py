"""rnn_sentiment.server"""
